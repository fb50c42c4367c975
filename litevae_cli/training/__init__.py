"""Training of both LiteVAE phases: `loop.py` (set-up and fit()), `step.py` (train_step(): one optimizer step),
`state.py` (what a checkpoint holds, writing it), `log.py` (metrics.jsonl, TensorBoard, sample grids) and `losses.py`
(the generator and discriminator losses)."""
