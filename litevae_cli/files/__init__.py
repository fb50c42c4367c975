"""Model files on disk: training checkpoints, exports, diffusers folders, atomic writes and output folders."""
