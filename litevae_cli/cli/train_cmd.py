"""`litevae pretrain`, `litevae finetune` and `litevae distill`: thin Typer commands over `training.loop.run`.

The three take the same options (declared once below) and make the same library call; finetune adds
`--from` and `--train`, distill `--teacher` and `--student`. torch is imported inside the call, so
`litevae --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import BatchSizeOpt, DeviceOpt, DownloadWeightsOpt, PrecisionOpt, user_errors

PresetOpt = Annotated[str, typer.Option("--preset", help="Preset name (see presets/) or path to a YAML file.")]
DataOpt = Annotated[str, typer.Option("--data", help="Image folder, shard pattern dir/train-{000000..000009}.tar, "
                                                     "or 'sample' (the embedded sample set).")]
RunOutOpt = Annotated[Path, typer.Option("--out", help="Run directory; rerunning with the same --out resumes.")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps (overrides train.steps).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set optim.lr=2e-4 "
                                                                    "(repeatable; values are YAML).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as YAML and exit; writes nothing.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=0, help="Data-loading worker processes per rank.")]
WeightsDirOpt = Annotated[Optional[Path], typer.Option("--weights-dir", help="Folder holding the LPIPS backbone "
                                                                             "weights (else the torch hub cache).")]
FromOpt = Annotated[Optional[Path], typer.Option("--from", help="Model to start from: a phase-A checkpoint or run "
                                                                "directory (its EMA weights when present), an export "
                                                                ".safetensors or a diffusers folder; optimizers and "
                                                                "step start fresh.")]


TrainOpt = Annotated[Optional[str], typer.Option("--train", help="all, or decoder: the encoder stays frozen, so its "
                                                                  "latents (and every diffusion model trained on "
                                                                  "them) stay valid (sets train.trainable).")]
TeacherOpt = Annotated[str, typer.Option("--teacher", help="The VAE whose latent space the student learns: a "
                                                           "diffusers AutoencoderKL folder or any MODEL; frozen.")]
StudentOpt = Annotated[Optional[str], typer.Option("--student", help="The student encoder: a registry name (default "
                                                                     "litevae-b; `litevae models`) or a MODEL whose "
                                                                     "encoder it starts from.")]


def _run(phase: str, preset, data, out, flags: dict, overrides, dry_run, device, weights_dir, download_weights,
         init_from=None) -> None:
    """The command: resolve the config (one pass; the phase checked; `flags` maps each dedicated flag to
    its value or None), open the runtime, run the loop (missing reference weights fetched and verified
    during it when --download-weights)."""
    import os

    # Before torch (and its OpenMP) loads: idle OpenMP threads sleep instead of spinning. On shared or
    # busy CPUs spinning threads steal the cores the step needs (demo step on a loaded 2-core machine:
    # 2.5-7 s with the default policy, 1.0 s with PASSIVE). An explicit setting in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from litevae_cli import runtime
    from litevae_cli.config import dump_config, resolve_config
    from litevae_cli.metrics.weights_download import allowed
    from litevae_cli.training import loop

    cfg = resolve_config(preset, overrides, flags, phase=phase)
    if dry_run:  # print the resolved config; touch nothing
        dump_config(cfg, sys.stdout)
        return
    with allowed(download_weights), runtime.open(device, cfg.train.precision) as rt:
        code = loop.run(rt, cfg, data, Path(out), init_from=init_from, weights_dir=weights_dir)
    if code:
        raise typer.Exit(code)


@user_errors
def pretrain(preset: PresetOpt, data: DataOpt, out: RunOutOpt, steps: StepsOpt = None, batch_size: BatchSizeOpt = None,
             device: DeviceOpt = None, precision: PrecisionOpt = None, overrides: SetOpt = None,
             dry_run: DryRunOpt = False, workers: WorkersOpt = None, weights_dir: WeightsDirOpt = None,
             download_weights: DownloadWeightsOpt = False) -> None:
    """Phase A: train an autoencoder from scratch (P: 128 px crops, no discriminator).

    Rerunning the same command with the same --out resumes from OUT/checkpoints/last.pt.
    Multi-GPU: torchrun --nproc_per_node N -m litevae_cli pretrain ...

    Examples:\n
      litevae pretrain --preset demo --data sample --out runs/demo\n
      litevae pretrain --preset b-pretrain --data /data/imagenet/train --out runs/b-a --dry-run\n
      litevae pretrain --preset b-pretrain --data /data/imagenet/train --out runs/b-a --download-weights\n
      litevae pretrain --preset b-pretrain --data 'shards/train-{000000..000099}.tar' --out runs/b-a --set optim.lr=2e-4
    """
    _run("pretrain", preset, data, out, {"--steps": steps, "--batch-size": batch_size, "--precision": precision,
                                         "--workers": workers}, overrides, dry_run, device, weights_dir, download_weights)


@user_errors
def finetune(preset: PresetOpt, data: DataOpt, out: RunOutOpt, init_from: FromOpt = None, train: TrainOpt = None,
             steps: StepsOpt = None, batch_size: BatchSizeOpt = None, device: DeviceOpt = None,
             precision: PrecisionOpt = None, overrides: SetOpt = None, dry_run: DryRunOpt = False,
             workers: WorkersOpt = None, weights_dir: WeightsDirOpt = None,
             download_weights: DownloadWeightsOpt = False) -> None:
    """Phase B: continue a phase-A model at higher resolution with the discriminator on; or, with
    --train decoder (preset sd-decoder-ft), finetune only the decoder of any VAE, the sd-vae-ft-mse way.

    --from loads the model weights (EMA when present); discriminator, optimizers and step start fresh.
    A preset with `model: null` (sd-decoder-ft) takes its model from --from: a diffusers AutoencoderKL
    folder (SD 1.x/2.x, SDXL, SD3, FLUX), an export or a checkpoint.
    Rerunning the same command with the same --out resumes that finetune instead.

    Examples:\n
      litevae finetune --preset demo-finetune --from runs/demo/checkpoints/last.pt --data sample --out runs/demo-ft\n
      litevae finetune --preset b-finetune --from runs/b-a/checkpoints/last.pt --data /data/imagenet/train --out runs/b-b\n
      litevae finetune --preset sd-decoder-ft --from vae/sd15 --data /data/laion --out runs/sd15-dec
    """
    _run("finetune", preset, data, out, {"--steps": steps, "--batch-size": batch_size, "--precision": precision,
                                         "--workers": workers, "--train": train}, overrides, dry_run, device,
         weights_dir, download_weights, init_from=init_from)


@user_errors
def distill(teacher: TeacherOpt, data: DataOpt, out: RunOutOpt, student: StudentOpt = None,
            preset: Annotated[str, typer.Option("--preset", help="Preset name or YAML path.")] = "distill",
            steps: StepsOpt = None, batch_size: BatchSizeOpt = None, device: DeviceOpt = None,
            precision: PrecisionOpt = None, overrides: SetOpt = None, dry_run: DryRunOpt = False,
            workers: WorkersOpt = None, weights_dir: WeightsDirOpt = None,
            download_weights: DownloadWeightsOpt = False) -> None:
    """Train a LiteVAE encoder into an existing VAE's latent space: the result encodes like the teacher
    and decodes with the teacher's own (frozen) decoder, so diffusion models trained on the teacher's
    latents keep working, at the cost of the student's encoder.

    The student's latent channels are the teacher's (4 for SD 1.x/2.x/SDXL, 16 for SD3/FLUX). The model
    written (checkpoints, `litevae export`) is student encoder + teacher decoder + the teacher's
    scaling/shift factors. Rerunning the same command with the same --out resumes.

    Examples:\n
      litevae distill --teacher vae/sd15 --student litevae-b --data /data/laion --out runs/distill-sd15\n
      litevae distill --teacher vae/flux --student litevae-s --data shards/train-{000000..000099}.tar --out runs/d-flux\n
      litevae export runs/distill-sd15 litevae-b-sd15 --format diffusers
    """
    _run("distill", preset, data, out, {"--steps": steps, "--batch-size": batch_size, "--precision": precision,
                                        "--workers": workers, "--teacher": teacher, "--student": student},
         overrides, dry_run, device, weights_dir, download_weights)
