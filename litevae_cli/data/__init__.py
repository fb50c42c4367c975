"""Everything between a `--data` spec and a batch of tensors.

- `sources.py`: sources (folders, WebDataset shards, the embedded sample set), decoding, transforms,
  the one image-side rule (`check_side`); its public names are re-exported here.
- `lists.py`: one image, a glob, .txt / .csv lists; `hf_datasets.py`: `hf:` Hugging Face datasets.
- `loaders.py`: the resumable train loader and the deterministic eval loader.
- `samples.py`: the embedded sample photos and their fixed train / held-out split.
"""

from litevae_cli.data.sources import (CROPS, IMAGE_EXTS, MIN_SIDE, MULTIPLE, SHARD_EXTS, DataError, ImageItem,
                                      ImageSource, check_crop, check_side, decode_image_bytes, eval_transform, load_image,
                                      parse_resolution, parse_resolutions, pil_to_tensor, resolve_source, shard_stem, source_id, to_rgb, train_transform, upscale_warning)

__all__ = ["CROPS", "check_crop", "IMAGE_EXTS", "MIN_SIDE", "MULTIPLE", "SHARD_EXTS", "DataError", "ImageItem", "ImageSource",
           "check_side", "decode_image_bytes", "eval_transform", "load_image", "parse_resolution", "parse_resolutions", "pil_to_tensor", "resolve_source",
           "shard_stem", "source_id", "to_rgb", "train_transform", "upscale_warning"]
