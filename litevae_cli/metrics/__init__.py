"""Reconstruction quality: `evaluate.py` (eval loop and protocol), `image.py` (PSNR, SSIM), `fid.py` (rFID) and
`weights.py` (the reference LPIPS / Inception files: found, or downloaded and sha256-verified when asked)."""
