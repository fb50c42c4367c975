"""The latent space: `encode.py` (encode-dataset; `journal.py`, its progress file), `reader.py` (the shard
format and its reader), `stats.py` (per-channel stats, scale/shift), `inspect.py` (inspect-latents) and `plots.py`."""
