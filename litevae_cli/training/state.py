"""The training state and everything that moves it in or out of a checkpoint.

Owns: the `TrainState` of one run (autoencoder, its DDP wrapper, EMA copy, discriminator, the two
Adam optimizers (fused where torch has the kernel, so a step can be skipped on the device: `step_unless`),
the GradScaler, step and data position), its construction from a `Config`, the EMA update (one multi-tensor
lerp), RNG capture/restore in a `weights_only=True`-loadable form, the checkpoint dict (layout in
`litevae_cli.files.checkpoint`'s docstring) and its writing (`save_checkpoint`: last.pt, numbered links),
resuming a run and initialising a finetune from `--from`,
and the run record (`run_record`: --data, command line, versions, precision, memory format) kept in
config.yaml and checkpoints, whose tensors reach the host in one go (`host_copy`).
A model the config cannot build, or weights that do not fit it, are one-line UserErrors. Device
placement, the DDP wrappers and the GradScaler come from the runtime (`rt.place`, `rt.wrap`).
The loop itself is in `litevae_cli.training.loop`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from litevae_cli.files.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LAST_NAME, checkpoint_dir, load_checkpoint,
                                          prune_numbered, save_atomic, stored_config)
from litevae_cli.files.model_file import load_autoencoder, load_weights
from litevae_cli.files.outputs import writing
from litevae_cli.config import Config, config_to_dict
from litevae_cli.data import source_id
from litevae_cli.errors import UserError, as_user_error
from litevae_cli.model_spec import ModelSpec, describe_spec
from litevae_cli.models import Autoencoder, create_autoencoder, create_model
from litevae_cli.models.layers import SMConv2d
from litevae_cli.runtime import Runtime, barrier, gather_objects, memory_record


@dataclass
class TrainState:
    """Everything the loop mutates. `model`/`disc` are the plain modules (what checkpoints hold);
    `model_ddp`/`disc_ddp` are what the step calls (the same objects in a single process)."""

    model: Autoencoder
    model_ddp: nn.Module
    ema: Optional[Autoencoder]
    disc: Optional[nn.Module]
    disc_ddp: Optional[nn.Module]
    opt_g: torch.optim.Optimizer
    opt_d: Optional[torch.optim.Optimizer]
    scaler: torch.amp.GradScaler
    step: int = 0  # optimizer steps done in this phase
    data_position: int = 0  # samples this rank has consumed (the loader's start_sample on resume)
    nonfinite_total: int = 0  # skipped (non-finite) steps so far in this process
    nonfinite_run: int = 0  # consecutive non-finite steps
    run: dict = field(default_factory=dict)  # run_record(): what produced this run


def build_train_state(rt: Runtime, cfg: Config) -> TrainState:
    """Fresh models (seeded identically on every rank), EMA, discriminator, Adam x2 (P App. F), scaler."""
    with as_user_error(f"config model ({cfg.model.describe()}) cannot be built"):
        model = rt.place(create_autoencoder(cfg.model).set_trainable(cfg.train.trainable), channels_last=True)
    disc = None
    if cfg.discriminator.name is not None:
        with as_user_error(f"config discriminator {cfg.discriminator.name} {cfg.discriminator.kwargs} cannot be built"):
            disc = rt.place(create_model(cfg.discriminator.name, **cfg.discriminator.kwargs), channels_last=True)
        side = getattr(disc, "downscale", 1)  # the UNet discriminator pools its input down to 4x4
        if cfg.data.resolution % side:
            raise UserError(f"discriminator {cfg.discriminator.name} needs data.resolution to be a multiple of "
                            f"{side}, got {cfg.data.resolution}")
    ema = None
    if cfg.train.ema_decay is not None:
        ema = copy.deepcopy(model).eval().requires_grad_(False)
    o = cfg.optim
    opt_g = make_adam(rt, generator_param_groups(model, o.lr, o.smc_gain_lr_mult), lr=o.lr,
                      betas=tuple(o.betas), weight_decay=o.weight_decay)
    opt_d = None
    if disc is not None:  # P App. F: the discriminator uses the same Adam settings (its own lr/betas keys)
        opt_d = make_adam(rt, disc.parameters(), lr=o.disc_lr, betas=tuple(o.disc_betas),
                          weight_decay=o.weight_decay)
    return TrainState(model, rt.wrap(model), ema, disc, rt.wrap(disc) if disc is not None else None,
                      opt_g, opt_d, rt.grad_scaler())


FUSED_ADAM_DEVICES = ("cuda", "cpu")  # where torch's fused Adam runs (one kernel per group; on-device skip)


def make_adam(rt: Runtime, params, **kwargs) -> torch.optim.Adam:
    """Adam, fused where torch has the kernel: one launch per step instead of one per parameter, a step
    skipped on the device by a flag tensor (`step_unless`, no host read) and, in fp16, a GradScaler step
    without the host read of its inf check. Same update rule as the default implementation."""
    return torch.optim.Adam(params, fused=rt.device.type in FUSED_ADAM_DEVICES, **kwargs)


def step_unless(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, skip: torch.Tensor) -> None:
    """`opt.step()` through `scaler`, skipped where the 0-dim float `skip` is non-zero (parameters, moments
    and step count untouched), decided on the device: a fused Adam takes the flag as its `found_inf`,
    the attribute GradScaler itself sets for such optimizers. In fp16 the flag joins the scaler's own inf
    check (so a skip also lowers the loss scale, as an overflow does). An optimizer without that support
    reads the flag on the host (one sync)."""
    if not opt.defaults.get("fused"):
        if not bool(skip):
            scaler.step(opt)
        return
    if scaler.is_enabled():
        scaler.unscale_(opt)  # the scaler's found_inf per device, computed on the device
        for found in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values():
            found.add_(skip.to(found.device))
        scaler.step(opt)
        return
    opt.found_inf = skip.to(torch.float32)
    try:
        opt.step()
    finally:
        del opt.found_inf


def generator_param_groups(model: nn.Module, lr: float, smc_gain_lr_mult: float) -> list[dict]:
    """Adam parameter groups of the trained parameters: everything at `lr`, and with a multiplier other than 1 the SMC gains g and
    per-channel scales s (LiteVAE Eq. 3) in a second group at lr * multiplier (a demo-only setting)."""
    trained = [p for p in model.parameters() if p.requires_grad]  # a frozen half (train.trainable) has none
    if smc_gain_lr_mult == 1.0:
        return [{"params": trained}]
    gains = {id(p) for m in model.modules() if isinstance(m, SMConv2d) for p in (m.gain, m.scale)}
    return [{"params": [p for p in trained if id(p) not in gains]},
            {"params": [p for p in trained if id(p) in gains], "lr": lr * smc_gain_lr_mult}]


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int, warmup: bool) -> float:
    """ema <- decay * ema + (1 - decay) * model; with warm-up the decay is min(decay, (1+t)/(10+t))
    (the ramp of open-LiteVAE / the classic TF ExponentialMovingAverage with num_updates)."""
    if warmup:
        decay = min(decay, (1.0 + step) / (10.0 + step))
    # One multi-tensor launch per dtype/device group instead of one lerp_ per parameter (656 in the B model).
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)
    return decay


# ----------------------------------------------------------------------------- RNG
def capture_rng() -> dict:
    """This process's RNG states as tensors / lists / ints / strings only (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [int(py_state[0]), torch.tensor(py_state[1], dtype=torch.int64),
                   None if py_state[2] is None else float(py_state[2])],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss_next))


def gather_rng(rt: Runtime) -> list[dict]:
    """Every rank's RNG states (rank order), so a DDP resume restores each rank exactly. Collective."""
    return gather_objects(rt, capture_rng())


# ----------------------------------------------------------------------------- checkpoints
def all_finite(module: nn.Module) -> bool:
    """Whether every parameter is finite: the largest magnitude of each (inf or NaN when any element is),
    one multi-tensor reduction, read once."""
    params = [p.detach() for p in module.parameters()]
    if not params:
        return True
    return bool(torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(params, float("inf"))])).all())


def host_copy(tree):
    """`tree` (dicts, lists, tuples, tensors, anything else) with every device tensor copied to the host in
    one go: asynchronous copies into pinned memory, then one synchronize (a plain `.cpu()` per tensor, or
    torch.save of device tensors, waits once per tensor). Host tensors are returned as they are, strides kept."""
    copies = []

    def walk(obj):
        if isinstance(obj, torch.Tensor):
            if obj.device.type == "cpu":
                return obj
            host = torch.empty_like(obj, device="cpu", pin_memory=obj.device.type == "cuda")
            host.copy_(obj.detach(), non_blocking=True)
            copies.append(obj.device)
            return host
        if isinstance(obj, dict):
            return type(obj)((k, walk(v)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return type(obj)(walk(v) for v in obj)
        return obj

    out = walk(tree)
    for device in {d for d in copies if d.type == "cuda"}:
        torch.cuda.synchronize(device)
    return out


def make_checkpoint(rt: Runtime, cfg: Config, state: TrainState, rng: list[dict]) -> dict:
    """The checkpoint dict (format in litevae_cli.files.checkpoint). The caller checks `all_finite` first,
    so last.pt is never overwritten by a diverged model. The model spec is stored once (model_spec)."""
    config = config_to_dict(cfg)
    del config["model"]
    return host_copy({
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_spec": state.model.spec.to_dict(),
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "discriminator_name": cfg.discriminator.name if state.disc is not None else None,
        "discriminator": state.disc.state_dict() if state.disc is not None else None,
        "optimizer_g": state.opt_g.state_dict(),
        "optimizer_d": state.opt_d.state_dict() if state.opt_d is not None else None,
        "scaler": state.scaler.state_dict(),
        "step": state.step,
        "rng": {"world_size": rt.world_size, "ranks": rng},
        # Samples consumed per rank; the global stream position is data_position * world_size.
        "data_position": {"per_rank": state.data_position, "world_size": rt.world_size},
        "config": config,
        "run": state.run,
    })


def save_checkpoint(rt: Runtime, cfg: Config, state: TrainState, out: Path, numbered: bool, wait: bool = True) -> Path:
    """last.pt (atomic) and, when `numbered`, step-XXXXXXX.pt as a hard link of the same file; then only
    the `train.keep_checkpoints` newest numbered files stay. Collective (gathers every rank's RNG); only rank 0
    writes; `wait=False` (a stop): the other ranks leave without waiting for the write."""
    if not all_finite(state.model):  # identical weights on every rank, so every rank raises together
        raise UserError(f"step {state.step}: the autoencoder weights are not finite; "
                        "the last good checkpoint is left as it was")
    rng = gather_rng(rt)
    ckpt_dir = checkpoint_dir(out)
    last = ckpt_dir / LAST_NAME
    if rt.is_main:
        ckpt = make_checkpoint(rt, cfg, state, rng)
        path = ckpt_dir / (f"step-{state.step:07d}.pt" if numbered else LAST_NAME)
        intact = f"; {last} (the previous checkpoint) is intact" if last.is_file() else ""
        with writing(path, intact):  # save_atomic: a failed write leaves the previous file as it was
            save_atomic(ckpt, path)
            if numbered:
                tmp = ckpt_dir / f".{LAST_NAME}.{os.getpid()}.link"
                try:  # a new name for the same bytes, then an atomic rename over last.pt
                    tmp.unlink(missing_ok=True)
                    os.link(path, tmp)
                    os.replace(tmp, last)
                except OSError:
                    save_atomic(ckpt, last)
                prune_numbered(ckpt_dir, cfg.train.keep_checkpoints)  # after last.pt is safe
    if wait:
        barrier(rt)
    return last


def run_record(data: str, rt: Runtime | None = None, modules: dict | None = None) -> dict:
    """What produced a run: the --data spec (paths absolute), the command line, the versions and, given the
    runtime, the precision that ran and why (train.precision may say auto), whether freed host memory is kept
    (`runtime.host_memory`) and, given the run's `modules`
    (name -> module), which run channels_last and whether cudnn.benchmark is on (`runtime.memory_record`)."""
    from litevae_cli import __version__

    record = {"data": source_id(data), "command": shlex.join(sys.argv), "litevae": __version__,
              "torch": str(torch.__version__)}
    if rt is not None:
        record |= rt.precision_record() | rt.host_memory_record()
        record |= memory_record(rt, modules) if modules is not None else {}
    return record


def check_resumable(ckpt: dict, cfg: Config, path: Path) -> list[str]:
    """Refuse a resume whose model, phase or discriminator differ; return the other keys that differ."""
    old, new = stored_config(ckpt) or {}, config_to_dict(cfg)
    if old.get("phase") != new["phase"]:
        raise UserError(f"{path} is a {old.get('phase')!r} run but the config says phase={new['phase']!r}; "
                        "use a new --out directory")
    with as_user_error(f"{path} holds no usable model spec"):
        stored = ModelSpec.from_dict(ckpt.get("model_spec"))
    if stored.architecture() != cfg.model.architecture():
        raise UserError(f"the model in {path} ({describe_spec(ckpt.get('model_spec'))}) differs from the config's "
                        f"({cfg.model.describe()}); use a new --out directory")
    if (old.get("discriminator") or {}).get("name") != new["discriminator"]["name"] or \
            (old.get("discriminator") or {}).get("kwargs") != new["discriminator"]["kwargs"]:
        raise UserError(f"the discriminator in {path} differs from the config's "
                        f"({new['discriminator']['name']}); use a new --out directory")
    return [f"{s}.{k}" for s in new if isinstance(new[s], dict) and isinstance(old.get(s), dict)
            for k in new[s] if old[s].get(k) != new[s][k]]


def load_resume(rt: Runtime, state: TrainState, ckpt: dict, path: Path) -> Optional[dict]:
    """Put a checkpoint's weights, optimizer/scaler state, step and data position into `state`.
    Returns this rank's RNG states to restore (None when the world size changed: then the data
    position is re-split over ranks and RNG streams restart from the seed, so the resume is approximate)."""
    load_weights(state.model, ckpt.get("model"), path)
    state.model.spec = ModelSpec.from_dict(ckpt["model_spec"])  # its latent factors (the architecture is checked)
    if state.ema is not None:
        load_weights(state.ema, ckpt["ema"] if ckpt.get("ema") is not None else ckpt.get("model"), path)
    if state.disc is not None:
        load_weights(state.disc, ckpt.get("discriminator"), path)
    with as_user_error(f"cannot resume from {path}"):
        if state.disc is not None:
            state.opt_d.load_state_dict(ckpt["optimizer_d"])
        state.opt_g.load_state_dict(ckpt["optimizer_g"])
        state.scaler.load_state_dict(ckpt["scaler"])
        state.step = int(ckpt["step"])
        pos = ckpt["data_position"]
        state.data_position = int(pos["per_rank"]) * int(pos["world_size"]) // rt.world_size
    rng = ckpt.get("rng") or {}
    if rng.get("world_size") == rt.world_size:
        return rng["ranks"][rt.rank]
    return None


def model_of_run(cfg: Config, resume_path: Optional[Path], init_from, download: bool = False) -> Config:
    """`cfg` with its model: the preset's, or with `model: null` (a finetune of any MODEL, e.g. an imported
    diffusers VAE) the resumed checkpoint's, else the --from model's."""
    if cfg.model is not None or cfg.phase == "distill":
        return cfg
    if resume_path is not None:
        spec = load_checkpoint(resume_path).get("model_spec")
        with as_user_error(f"{resume_path} holds no usable model spec"):
            return dataclasses.replace(cfg, model=ModelSpec.from_dict(spec))
    if init_from is None:
        raise UserError(f"preset {cfg.name!r} takes its model from --from (model: null): give --from MODEL")
    return dataclasses.replace(cfg, model=load_autoencoder(init_from, download=download).spec)


def load_init_weights(state: TrainState, cfg: Config, path: str | Path, download: bool = False,
                      use_ema: bool = True) -> bool:
    """finetune --from: a MODEL's weights (a checkpoint's EMA weights when present, else its raw weights;
    an export; a diffusers folder) into the autoencoder and the EMA copy; the discriminator, optimizers and
    step stay fresh. Returns used_ema."""
    loaded = load_autoencoder(path, use_ema=use_ema, download=download)  # a checkpoint, a run directory, an export or a diffusers folder
    if loaded.spec.architecture() != cfg.model.architecture():
        raise UserError(f"--from {loaded.path} holds {loaded.spec.describe()} but the preset wants "
                        f"{cfg.model.describe()}")
    weights = loaded.model.state_dict()
    load_weights(state.model, weights, f"--from {loaded.path}")
    state.model.spec = loaded.spec  # the latent factors of --from (an imported VAE's) stay with the model
    if state.ema is not None:
        state.ema.load_state_dict(weights)
    return loaded.used_ema
