"""Everything between a `--data` spec and a batch of tensors.

- `sources.py`: sources (folders, WebDataset shards, the embedded sample set, lists), the one image-side
  rule (`check_side`); its public names, and those of the modules below, are re-exported here.
- `lists.py`: one image, a glob, .txt / .csv lists; `hf_datasets.py`: `hf:` Hugging Face datasets.
- `decode.py`: what a path is (special files), the pixel cap, PIL -> RGB, uint8 <-> [-1,1] (`to_model_range`).
- `transforms.py`: the training crop (JPEG-drafted when it pays) and the eval crops.
- `index.py`: the shared item table (`ItemTable`) and the folder scan.
- `loaders.py`: the resumable train loader and the deterministic eval loader; `shards.py`: their shard
  datasets; `workers.py`: worker set-up (dies with its parent).
- `samples.py`: the embedded sample photos and their fixed train / held-out split.
"""

from litevae_cli.data.sources import (CROPS, IMAGE_EXTS, MIN_SIDE, MULTIPLE, SHARD_EXTS, DataError, ImageItem,
                                      ImageSource, ItemTable, check_crop, check_side, decode_image_bytes,
                                      eval_transform, load_image, max_pixels, parse_resolution, parse_resolutions,
                                      pil_to_tensor, pil_to_uint8, resolve_source, shard_stem, source_id,
                                      to_model_range, to_rgb, train_transform, upscale_warning)

__all__ = ["CROPS", "check_crop", "IMAGE_EXTS", "MIN_SIDE", "MULTIPLE", "SHARD_EXTS", "DataError", "ImageItem",
           "ImageSource", "ItemTable", "check_side", "decode_image_bytes", "eval_transform", "load_image",
           "max_pixels", "parse_resolution", "parse_resolutions", "pil_to_tensor", "pil_to_uint8", "resolve_source",
           "shard_stem", "source_id", "to_model_range", "to_rgb", "train_transform", "upscale_warning"]
