"""Using a trained model on images: reconstructions and the tiling of large images."""
