"""The latent space: `encode.py` (encode-dataset), `reader.py` (the shard format and its reader),
`stats.py` (per-channel stats, scale/shift), `inspect.py` (inspect-latents) and `plots.py`."""
