"""The training loop of every phase: `litevae pretrain` (phase A), `litevae finetune` (phase B; with
`train.trainable: decoder` a decoder-only finetune) and `litevae distill` (a student encoder into a frozen
teacher's latent space, `training.distill`: the same loop with `DistillLoss` and the decoder frozen).

Layers, as in litgpt: the command resolves the config (`config.resolve_config`, which checks the
phase) and opens the runtime; `run()` builds the data, the state and the loss, and resumes a run or
starts a finetune from `--from` (required when `phase: finetune` and OUT holds no run; a `model: null`
preset takes its model from it) or a distillation from `--teacher`; `fit()` is the
loop, one readable `while` in the manner of edm2 (status, samples, checkpoint, then the step), and
`train_step()` (`training.step`) is one optimizer step, in `loss_fn` (`training.losses.GeneratorLoss`);
checkpoints are written by `training.state.save_checkpoint`. `train()` is
the command's three steps as one call, for Python callers. Recipe (spec "Training recipe"; P App. F):
Adam for the autoencoder and, when a discriminator is configured, a second Adam for it from
`discriminator.start_step` on; the adversarial term has the constant weight `loss.adversarial`
(no adaptive weight: P reports it unstable in mixed precision); EMA of the autoencoder.

Batches (`training.batching`): `train.batch_size` is the GLOBAL batch of one optimizer step; each rank
reads batch_size / (world_size x grad_accum) images per micro-batch, from its own part of the data;
`train.batch_per_gpu` overrides it with a per-rank batch. The start line and the run record say which.
Peers: under torchrun a rank whose peer died ends with one line and exit 1 (`train`: `jobs.stopping.peers_guard`).
Resume: rerunning with the same `--out` continues from OUT/checkpoints/last.pt with the weights,
both optimizers, scaler, step, every rank's RNG states and the data position; on CPU with the same
world size and workers the result is bit-identical to an uninterrupted run.
Non-finite losses: the step is skipped (no optimizer step) on every rank and counted; after
`train.max_nonfinite` in a row the run stops with a UserError and last.pt is left as it was.
Host syncs: one per optimizer step in steady state (`train_step`: its flags, one all_reduce, one read).
A non-finite DISCRIMINATOR loss skips the discriminator's step on the device (the generator has stepped,
as before) and is read one step late: the step is counted as non-finite (its terms kept out of
metrics.jsonl) with the next step's flags or at the next log / checkpoint step, whichever comes first,
so `train.max_nonfinite` may stop a run one step later. Loss sums stay on the device until a log step.
Stops (`litevae_cli.jobs.stopping`): SIGTERM / SIGINT, also sent to the whole process group, and a data-loader
worker that died are checked before the next batch is fetched (under torchrun a signal on any rank
reaches every rank through the next step's flags: that step completes, then all stop); last.pt is written
from the last completed step and the process exits 128+signal with one line. Before any of that, everything is
checked (config, data with a readable image, --from, a writable --out) and OUT is locked for the
run (`litevae_cli.files.outputs`); unreadable images are skipped, counted in metrics.jsonl and named in
OUT/skipped.txt. config.yaml and every checkpoint record the run (`training.state.run_record`).
Test hook: with LITEVAE_TEST_RANK_DUMP=DIR every rank saves its final autoencoder and discriminator
parameters (and spectral-norm buffers) to DIR/rank<r>.pt
(the DDP test compares them); nothing else reads it.
"""

from __future__ import annotations

from litevae_cli import runtime  # first: its process-level settings must precede torch (runtime's docstring)

import dataclasses
import os
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from litevae_cli.files.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint
from litevae_cli.config import Config, config_to_dict, dump_config, resolve_config
from litevae_cli.data import resolve_source, to_model_range, upscale_warning
from litevae_cli.data.loaders import make_train_loader, require_readable
from litevae_cli.errors import UserError
from litevae_cli.files.outputs import SKIPPED_NAME, SkipLog, check_out_dir, locked, writing
from litevae_cli.jobs.progress import TrainProgress
from litevae_cli.models.compiling import compile_backend
from litevae_cli.runtime import Runtime, all_reduce_sum, gather_objects, seed_everything
from litevae_cli.runtime.compiled_models import compile_models
from litevae_cli.jobs.stopping import StopSignal, fault_injection_point, peers_guard
from litevae_cli.training.batching import batch_plan, lr_note
from litevae_cli.training.log import LossMeter, RunLog, save_reconstructions, wandb_module
from litevae_cli.files.hub import is_hub_id
from litevae_cli.training.distill import (DistillLoss, check_student_fits, distill_spec, init_from_teacher,
                                          load_teacher)
from litevae_cli.training.losses import GeneratorLoss
from litevae_cli.training.state import (TrainState, build_train_state, check_resumable, load_init_weights, load_resume,
                                        model_of_run, restore_rng, run_record, save_checkpoint)
from litevae_cli.training.step import StepResult, train_step  # fit() calls train_step from here (tests patch it)

SAMPLE_IMAGES = 8  # images in each reconstruction grid


def train(command: str, preset: str, data: str, out: str | Path, *, init_from: str | Path | None = None,
          device: str | None = None, overrides=(), weights_dir: str | Path | None = None,
          download_weights: bool = False, dry_run: bool = False, use_ema: bool = True, **flags) -> int:
    """`litevae pretrain|finetune|distill` as one call: resolve the config (`flags`: steps, batch_size,
    precision, workers, train, teacher, student, as the CLI flags; None = the preset's), then with
    `dry_run` print it as YAML and return, else open the runtime and `run()` (missing reference weights
    fetched and verified when `download_weights`, as --download-weights; `use_ema=False`: --from, --teacher
    and a --student MODEL give their raw weights, as --no-ema). Returns the process exit code."""
    cfg = resolve_config(preset, overrides, {f"--{k.replace('_', '-')}": v for k, v in flags.items()}, phase=command)
    if dry_run:  # print the resolved config; touch nothing
        dump_config(cfg, sys.stdout)
        return 0
    if cfg.log.wandb:
        wandb_module()  # installed? (a one-line error before any work)
    if cfg.runtime.compile:
        compile_backend(cfg.runtime.compile_backend)  # a known backend? (likewise)
    with runtime.open(device, cfg.train.precision, force_distributed=cfg.runtime.force_distributed or None,
                      dist_timeout_s=cfg.runtime.dist_timeout_s) as rt, peers_guard(rt.rank, rt.world_size, Path(out)):
        code = run(rt, cfg, data, Path(out), init_from=init_from, weights_dir=weights_dir,
                   download_weights=download_weights, use_ema=use_ema)
        if code:  # a stop: the other ranks may be gone already; leave without waiting on them
            runtime.abort_process_group()
        return code


def run(rt: Runtime, cfg: Config, data: str, out: Path, init_from: str | Path | None = None,
        weights_dir: str | Path | None = None, download_weights: bool = False, use_ema: bool = True) -> int:
    """Check everything, build loss and state, then, holding OUT's lock: resume from OUT or initialise
    from --from, start the loader and fit(). Returns the process exit code."""
    rt = runtime.configure(rt, cfg.runtime.channels_last, cfg.runtime.cudnn_benchmark)
    source = resolve_source(data)
    for note in source.notes:
        rt.print(note)
    plan = batch_plan(cfg, rt.world_size)
    micro = plan.per_gpu
    resume_path = latest_checkpoint(out)
    if resume_path is None and init_from is not None and not Path(init_from).exists() and not is_hub_id(init_from):
        raise UserError(f"--from checkpoint not found: {init_from}")
    teacher = None
    if cfg.phase == "distill":
        if init_from is not None:
            raise UserError("distill starts from --teacher (and --student MODEL), not --from")
        teacher = load_teacher(cfg, download_weights, use_ema)
        cfg = dataclasses.replace(cfg, model=distill_spec(cfg, teacher))
    cfg = model_of_run(cfg, resume_path, init_from, download_weights)
    if resume_path is None and init_from is None and cfg.phase == "finetune":
        raise UserError(f"`litevae finetune` with preset {cfg.name!r} needs --from CKPT "
                        f"(a phase-A checkpoint), and {out} holds no run to resume")
    check_out_dir(out)
    require_readable(source)
    # Built before seeding: LPIPS construction must not shift the training RNG streams.
    if teacher is not None:
        loss_fn = rt.place(DistillLoss(cfg, teacher.loaded.model.encoder, teacher.loaded.spec, weights_dir, rt.autocast,
                                        download_weights))
    else:
        loss_fn = rt.place(GeneratorLoss(cfg.loss, cfg.discriminator.loss, weights_dir=weights_dir,
                                          download_weights=download_weights, run_precision=rt.precision))
    seed_everything(cfg.train.seed)  # identical initial weights on every rank
    state = build_train_state(rt, cfg)
    if teacher is not None:
        check_student_fits(state.model.encoder, teacher)
    state.run = run_record(data, rt, {"encoder": state.model.encoder, "decoder": state.model.decoder,
                                      "discriminator": state.disc}) | {"batch": plan.record(),
                                                                       "distributed": rt.dist_record()}
    if cfg.runtime.compile:  # in place: checkpoints keep their keys (runtime.compiled_models)
        state.run["compile"] = compile_models(rt.device, state.model.encoder, state.model.decoder, state.disc,
                                              getattr(loss_fn, "lpips", None), backend=cfg.runtime.compile_backend)
    with locked(out, rt), StopSignal() as signals:
        resume_path = latest_checkpoint(out)  # again: under the lock, it cannot change any more
        rng = None
        if resume_path is not None:
            ckpt = load_checkpoint(resume_path, map_location="cpu")  # RNG states must stay CPU tensors
            changed = check_resumable(ckpt, cfg, resume_path)
            rng = load_resume(rt, state, ckpt, resume_path)
            old_data = (ckpt.get("run") or {}).get("data")
            del ckpt
            rt.print(f"resuming {out} from {resume_path} at step {state.step} of {cfg.train.steps}"
                     + (f" (changed since: {', '.join(changed)})" if changed else "")
                     + ("; --from is ignored when resuming" if init_from is not None else "")
                     + ("" if rng is not None or state.step == 0 else "; world size changed: RNG streams restart"))
            if old_data is not None and old_data != state.run["data"]:
                rt.print(f"warning: resuming on different data: {resume_path} was trained on {old_data}, "
                         f"this run reads {state.run['data']}")
        elif init_from is not None:
            used_ema = load_init_weights(state, cfg, init_from, download_weights, use_ema)
            rt.print(f"initialised from {init_from} ({'EMA' if used_ema else 'raw'} weights); "
                     "discriminator, optimizers and step start fresh")
        elif teacher is not None:
            init_from_teacher(state.model, state.ema, teacher)
            rt.print(f"distilling into the latent space of {teacher.loaded.describe()}"
                     + (f"; student starts from {teacher.student_init.describe()}" if teacher.student_init else ""))
        if cfg.train.trainable != "all":
            frozen = "decoder" if cfg.train.trainable == "encoder" else "encoder"
            rt.print(f"training the {cfg.train.trainable} only: the {frozen} is frozen (eval mode, no gradient)")
        seed_everything(cfg.train.seed + rt.rank)  # distinct posterior-noise streams per rank
        loader = make_train_loader(source, cfg.data.resolution, micro, workers=cfg.data.workers,
                                   seed=cfg.train.seed, rank=rt.rank, world_size=rt.world_size,
                                   start_sample=state.data_position, rescale=tuple(cfg.data.rescale))
        batches = iter(loader)  # creating the iterator draws from the torch RNG: do it before restoring
        signals.watch(batches)
        if rng is not None:
            restore_rng(rng)
        if rt.is_main:
            with writing(out / "config.yaml"):
                dump_config(cfg, out / "config.yaml", run=state.run)
            for stale in checkpoint_dir(out).glob(".*.pt.*"):  # temp files of a save cut short by kill -9
                stale.unlink(missing_ok=True)
        rt.print(f"{cfg.phase} {cfg.name}: {cfg.model.describe()}, disc {cfg.discriminator.name}, "
                 f"{cfg.data.resolution}px, {plan.describe()}, {cfg.train.steps} steps, {rt.device} {rt.precision}"
                 f"{f' ({rt.precision_reason})' if cfg.train.precision == 'auto' else ''}, data {source.spec}, "
                 f"out {out}")
        if note := lr_note(cfg, plan):
            rt.print(note)
        return fit(rt, cfg, state, batches, loss_fn, out, signals, resumed=resume_path is not None)


def _loss_terms(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith(("g/", "d/"))}


def fit(rt: Runtime, cfg: Config, state: TrainState, batches, loss_fn, out: Path, signals: StopSignal,
        resumed: bool = False) -> int:
    """The loop. Returns 0 when `train.steps` are done, 128+signal after a stop (module docstring)."""
    total_steps, accum = cfg.train.steps, cfg.train.grad_accum
    start_step = state.step
    wandb = ({"config": {**config_to_dict(cfg), "run": state.run}, "project": cfg.log.wandb_project}
             if cfg.log.wandb else None)
    log = RunLog(rt, out, cfg.log.tensorboard, start_step if resumed else None, wandb)
    if log.note:
        rt.print(log.note)
    skips = SkipLog(out / SKIPPED_NAME, rt.print, resume=True)  # every rank appends what it could not read
    meter = LossMeter()
    samples = None  # a fixed batch for the reconstruction grids (first images this process sees)
    upscaled: set[str] = set()  # images under the crop size (said once, at the end)
    tick_time, tick_images, tick_skipped = time.perf_counter(), 0, 0
    stop = False
    last = None
    if start_step >= total_steps:
        rt.print(f"already at step {start_step} of {total_steps}: nothing to do (raise --steps to continue)")
    # A live bar on a terminal; in logs and batch jobs a plain status line per log step instead.
    interactive = Console().is_terminal
    warmup: float | None = None  # seconds of the first step when compiling (`runtime.compile`)
    pending: StepResult | None = None  # the last step whose discriminator flag is not read yet

    def settle(skipped: bool | None = None) -> None:
        """Account for `pending` once its discriminator flag is known (`skipped`; None: read it now)."""
        nonlocal pending
        if pending is not None:
            done_step, pending = pending, None
            if done_step.d_nonfinite if skipped is None else skipped:
                count_nonfinite()  # a skipped discriminator step: counted, its terms kept out of the log
                return
            state.nonfinite_run = 0
            for prefix, step_terms in (("g", done_step.g_terms), ("d", done_step.d_terms)):
                for terms in step_terms:
                    meter.add(prefix, terms)

    def count_nonfinite() -> None:
        state.nonfinite_total += 1
        state.nonfinite_run += 1
        if state.nonfinite_run >= cfg.train.max_nonfinite:
            where = latest_checkpoint(out)
            raise UserError(f"stopped at step {state.step}: {state.nonfinite_run} consecutive steps had a "
                            f"non-finite loss (train.max_nonfinite={cfg.train.max_nonfinite}); last good "
                            f"checkpoint: {where or 'none written yet'}; try a lower optim.lr or fp32")

    with TrainProgress(total_steps, start_step, rt.is_main and interactive, rt.print) as progress:
        while True:
            if not stop and not rt.distributed:  # before fetching the next batch (under torchrun: the step's flags)
                stop = signals.requested
            done = state.step >= total_steps or stop
            progressed = state.step > start_step
            if progressed and (done or state.step % cfg.log.every == 0 or state.step % cfg.log.checkpoint_every == 0):
                settle()  # before the status line and the checkpoint: the previous step fully counted

            # Status: metrics.jsonl, TensorBoard, progress text (collective: every rank, same steps).
            if progressed and (state.step % cfg.log.every == 0 or done):
                now = time.perf_counter()
                counts = all_reduce_sum(rt, torch.tensor([float(tick_images), float(tick_skipped)]))
                record = {"step": state.step, **meter.means(rt),
                          "img_per_s": counts[0].item() / max(now - tick_time, 1e-9),
                          "skipped_images": int(counts[1].item()), "nonfinite_steps": state.nonfinite_total,
                          "lr": state.opt_g.param_groups[0]["lr"]}
                if state.opt_d is not None:
                    record["disc_lr"] = state.opt_d.param_groups[0]["lr"]
                log.write(record)
                progress.report(state.step, record["img_per_s"], _loss_terms(record))
                meter.reset()
                tick_time, tick_images, tick_skipped = now, 0, 0

            # Reconstruction grid (rank 0; EMA weights when kept, never the DDP wrapper: no collectives).
            if progressed and rt.is_main and samples is not None and (state.step % cfg.log.sample_every == 0 or done):
                net = state.ema if state.ema is not None else state.model
                grid = out / "samples" / f"step-{state.step:07d}.png"
                with writing(grid):
                    save_reconstructions(net, samples, grid, rt.autocast)
                log.add_grid("reconstructions", grid, state.step)

            # Checkpoint: step-XXXXXXX.pt every checkpoint_every, last.pt always the newest.
            if progressed and (state.step % cfg.log.checkpoint_every == 0 or done):
                last = save_checkpoint(rt, cfg, state, out, numbered=state.step % cfg.log.checkpoint_every == 0,
                                       wait=not stop)

            if done:
                break
            fault_injection_point(rt.rank, state.step)

            # One optimizer step over grad_accum micro-batches (fewer when a loader worker died).
            micro = []
            while len(micro) < accum and (batch := signals.fetch(batches)) is not None:
                micro.append(batch)
            images = [b["images"] for b in micro]
            lost = len(images) < accum
            if samples is None and any(len(x) for x in images):
                samples = to_model_range(rt.batch(next(x for x in images if len(x))[:SAMPLE_IMAGES]))
            started = time.perf_counter()
            result = train_step(rt, cfg, state, loss_fn, images + [torch.empty(0, 3, 1, 1)] * (accum - len(images)),
                                lost, pending.d_flag if pending is not None else None, signals.requested)
            if cfg.runtime.compile and warmup is None:  # the first step captures and builds the graphs
                warmup = time.perf_counter() - started
                tick_time += warmup  # left out of the first status line's img/s
                rt.print(f"compile: warm-up {warmup:.1f} s in step {state.step} (graph capture and code "
                         "generation), left out of img/s")
            settle(result.prev_d_nonfinite)
            if result.stop:  # nothing was updated: last.pt is written from the last completed step
                stop = True
                continue
            stop = result.stop_after  # a rank was asked to stop: this step completes, then every rank stops
            state.data_position += sum(b["images"].shape[0] + b["skipped"] for b in micro)
            tick_images += result.images
            tick_skipped += sum(b["skipped"] for b in micro)
            for b in micro:
                skips.extend(b["failed"])
                upscaled.update(b.get("upscaled", ()))
            if result.nonfinite:
                count_nonfinite()
                continue
            pending = result
            if result.d_flag is None:  # no discriminator step: nothing left to read
                settle(False)
            progress.advance(state.step)
    log.close()
    upscaled = set().union(*gather_objects(rt, upscaled))
    if upscaled:
        rt.print(upscale_warning(len(upscaled), cfg.data.resolution))

    if os.environ.get("LITEVAE_TEST_RANK_DUMP"):
        dump = Path(os.environ["LITEVAE_TEST_RANK_DUMP"])
        dump.mkdir(parents=True, exist_ok=True)
        # Discriminator: parameters, and the buffers that DDP does not broadcast (spectral-norm u, v), which
        # must agree too; not BatchNorm running stats (per rank between DDP's broadcasts).
        disc = None
        if state.disc is not None:
            disc = {n: p.detach() for n, p in state.disc.named_parameters()}
            if not runtime.needs_buffer_broadcast(state.disc):
                disc |= {n: b for n, b in state.disc.named_buffers()}
        torch.save({"model": state.model.state_dict(), "discriminator": disc}, dump / f"rank{rt.rank}.pt")
    kept = last or latest_checkpoint(out)
    if stop:
        saved = f"wrote {last}" if last else f"checkpoint {kept} unchanged" if kept else "no checkpoint yet"
        rt.print(f"{signals.reason}: stopped after step {state.step}, {saved}; rerun the same command to resume")
        return signals.exit_code
    rt.print(f"done: step {state.step} of {total_steps}; checkpoint {kept}"
             + (f"; {skips.summary()}" if skips.count else ""))
    return 0
