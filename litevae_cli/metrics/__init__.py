"""Reconstruction quality: `evaluate.py` (eval loop and protocol), `image.py` (PSNR, SSIM), `fid.py` (rFID),
`weights.py` (the pretrained LPIPS / Inception files), `weights_download.py` (their opt-in, sha256-verified
download) and `reconstruct.py` (tiled reconstruction of images)."""
