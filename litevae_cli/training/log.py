"""What a training run writes besides checkpoints: metrics.jsonl, TensorBoard / W&B scalars, sample PNGs.

Owns (all on rank 0 only; the loop decides when):
- `OUT/metrics.jsonl`: one JSON object per `log.every` steps with `step`, every generator loss term
  as `g/<term>` and every discriminator term as `d/<term>` (means over the steps since the previous
  line and over ranks), `img_per_s` (all ranks), `skipped_images`, `nonfinite_steps`, `lr`, `disc_lr`.
- `OUT/samples/step-XXXXXXX.png`: input row over reconstruction row (posterior mean, no noise, so
  writing samples never draws from the training RNG and cannot change a resumed run).
- `OUT/tb/` (TensorBoard, when `log.tensorboard` is set): the same scalars under the same names, the
  learning rates (`lr`, `disc_lr`) among them, and every reconstruction grid as the image
  `reconstructions` at its step. A resumed run purges the events after its checkpoint's step.
- Weights & Biases (when `log.wandb` is set; `pip install 'litevae[wandb]'`): the same scalars and
  `reconstructions` images against the metric `step`, the resolved config (plus `run`: data, command,
  versions) as the run config, the OUT folder's name as the run name, project `log.wandb_project`
  (else $WANDB_PROJECT, else litevae). The run id is kept in `OUT/wandb-run.json`, so a resumed run
  continues the same W&B run (resume="allow"); W&B's files go to `OUT/wandb/` unless $WANDB_DIR is set.
  `WANDB_MODE=offline` writes them without network (`wandb sync OUT/wandb/offline-run-*` uploads later).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from litevae_cli.errors import UserError, one_line
from litevae_cli.files.atomic import append_text, save_image, write_text
from litevae_cli.runtime import Runtime, all_reduce_sum


class LossMeter:
    """Sums of loss terms over steps, reduced over ranks when read (collective: call on all ranks)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, prefix: str, terms: dict) -> None:
        for k, v in terms.items():
            key = f"{prefix}/{k}"
            v = torch.as_tensor(v).detach().float().reshape(())
            self.sums[key] = self.sums[key] + v if key in self.sums else v.clone()
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self, rt: Runtime) -> dict[str, float]:
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        total = torch.stack([self.sums[k] for k in keys])  # on the device the losses were computed on
        counts = torch.tensor([float(self.counts[k]) for k in keys], device=total.device)
        both = all_reduce_sum(rt, torch.cat([total, counts]))
        return {k: float(s / c) for k, s, c in zip(keys, both[:len(keys)].tolist(), both[len(keys):].tolist())}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


WANDB_RUN_NAME = "wandb-run.json"  # OUT/wandb-run.json: the W&B run id a resumed run continues
WANDB_PROJECT = "litevae"


def wandb_module():
    """The wandb package, else a one-line UserError saying how to install it (called before any work)."""
    try:
        import wandb
    except ImportError:
        raise UserError("log.wandb is on but the wandb package is not installed: pip install 'litevae[wandb]' "
                        "(or pip install wandb), or --set log.wandb=false") from None
    return wandb


class WandbLog:
    """One W&B run per OUT folder: its id stored in OUT/wandb-run.json, resumed with resume="allow"."""

    def __init__(self, out: Path, config: dict, project: str | None):
        wandb = self.wandb = wandb_module()
        stored = out / WANDB_RUN_NAME
        try:
            run = json.loads(stored.read_text())
        except (OSError, ValueError):
            run = {"id": secrets.token_hex(4), "name": out.resolve().name,
                   "project": project or os.environ.get("WANDB_PROJECT") or WANDB_PROJECT}
            write_text(stored, json.dumps(run) + "\n")
        try:
            self.run = wandb.init(project=run["project"], name=run["name"], id=run["id"], resume="allow",
                                  config=config, dir=None if os.environ.get("WANDB_DIR") else str(out),
                                  settings=wandb.Settings(console="off"))
        except Exception as err:  # noqa: BLE001 - not logged in, no network, bad settings
            raise UserError(f"cannot start the W&B run: {one_line(err)} (run `wandb login`, or set "
                            "WANDB_MODE=offline to log without network)") from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, record: dict) -> None:
        self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))})

    def image(self, tag: str, png: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Image(str(png)), "step": step})

    def close(self) -> None:
        self.run.finish()


class RunLog:
    """metrics.jsonl (+ TensorBoard, + W&B) writer; inert off rank 0. `wandb`: None (off) or
    {"config": the run config, "project": log.wandb_project}."""

    def __init__(self, rt: Runtime, out: Path, tensorboard: bool, resume_step: int | None, wandb: dict | None = None):
        self.enabled = rt.is_main
        self.path = out / "metrics.jsonl"
        self.writer = None
        self.wandb = None
        self.note = None
        if not self.enabled:
            return
        if resume_step is not None:
            self._truncate_after(resume_step)
        if wandb is not None:
            self.wandb = WandbLog(out, wandb["config"], wandb.get("project"))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.note = ("log.tensorboard is on but tensorboard is not installed (a dependency: rerun `make install`); "
                             "metrics go to metrics.jsonl only")
            else:
                self.writer = SummaryWriter(str(out / "tb"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """A run killed after its last checkpoint logged steps it will now redo: drop those lines."""
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:  # a line cut short by kill -9
                pass
        write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        append_text(self.path, json.dumps(record) + "\n")  # a failed append: one line, no torn record
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, record["step"])
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(record)

    def add_grid(self, tag: str, png: Path, step: int) -> None:
        """A written reconstruction grid (PNG) as a TensorBoard / W&B image."""
        if self.wandb is not None:
            self.wandb.image(tag, png, step)
        if self.writer is None:
            return
        with Image.open(png) as im:
            self.writer.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.close()


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] in [-1,1] -> one row [H, N*W, 3] uint8."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return torch.cat(list(x), dim=2).permute(1, 2, 0).contiguous().numpy()


@torch.no_grad()
def save_reconstructions(model: torch.nn.Module, images: torch.Tensor, path: Path, autocast) -> Path:
    """PNG grid: inputs on the top row, reconstructions (posterior mean) below."""
    was_training = model.training
    model.eval()
    with autocast():
        x_hat, _ = model(images, sample_posterior=False)
    model.train(was_training)
    grid = np.concatenate([_to_uint8(images), _to_uint8(x_hat)], axis=0)
    return save_image(Image.fromarray(grid), path)
