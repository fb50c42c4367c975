"""Training of both LiteVAE phases: `loop.py` (set-up and fit()), `state.py` (what a checkpoint holds),
`log.py` (metrics.jsonl, TensorBoard, sample grids) and `losses.py` (the generator and discriminator losses)."""
