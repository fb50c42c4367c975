"""Batch semantics of a training run: the global batch, the batch per rank and the gradient accumulation.

`train.batch_size` is the GLOBAL batch of one optimizer step (over all ranks and micro-batches), so a
recipe trains the same whatever the GPU count: each rank reads batch_size / (ranks x grad_accum) images per
micro-batch. `train.batch_per_gpu`, when set, overrides it: each rank reads that many per micro-batch and
the global batch grows with the GPU count (batch_per_gpu x grad_accum x ranks). The learning rate is never
changed behind the user's back: `lr_note` says what linear scaling (LDM's rule) would give instead.
README "Batch and learning rate on many GPUs" states the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from litevae_cli.config import Config
from litevae_cli.errors import UserError


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int  # images per optimizer step, all ranks together
    per_gpu: int  # images per rank per micro-batch
    grad_accum: int  # micro-batches per optimizer step
    world_size: int  # ranks
    source: str  # the key that set it: train.batch_size or train.batch_per_gpu

    def record(self) -> dict:
        """For the run record (config.yaml `run:` and every checkpoint)."""
        return {"global": self.global_batch, "per_gpu": self.per_gpu, "grad_accum": self.grad_accum,
                "world_size": self.world_size, "set_by": self.source}

    def describe(self) -> str:
        return (f"batch {self.global_batch} global = {self.per_gpu} per rank x {self.grad_accum} accum x "
                f"{self.world_size} ranks ({self.source})")


def batch_plan(cfg: Config, world_size: int) -> BatchPlan:
    """The run's batches on `world_size` ranks; a global batch that does not split evenly is a UserError."""
    accum = cfg.train.grad_accum
    if cfg.train.batch_per_gpu is not None:
        per = cfg.train.batch_per_gpu
        return BatchPlan(per * accum * world_size, per, accum, world_size, "train.batch_per_gpu")
    per_step = world_size * accum
    if cfg.train.batch_size % per_step:
        raise UserError(f"train.batch_size={cfg.train.batch_size} (the global batch) must be divisible by world size "
                        f"x grad_accum = {world_size} x {accum}; or set train.batch_per_gpu (images per GPU)")
    return BatchPlan(cfg.train.batch_size, cfg.train.batch_size // per_step, accum, world_size, "train.batch_size")


def lr_note(cfg: Config, plan: BatchPlan) -> str | None:
    """When the global batch differs from the preset's `train.batch_size` (batch_per_gpu), the lr that
    linear scaling would give; optim.lr itself stays as set."""
    if plan.global_batch == cfg.train.batch_size:
        return None
    k = plan.global_batch / cfg.train.batch_size
    return (f"note: global batch {plan.global_batch} is {k:g}x train.batch_size={cfg.train.batch_size}; optim.lr="
            f"{cfg.optim.lr:g} is used as set (linear scaling would give {cfg.optim.lr * k:g}: README "
            "'Batch and learning rate on many GPUs')")
