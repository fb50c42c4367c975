"""`litevae pretrain`, `litevae finetune` and `litevae distill`: thin Typer commands over `training.loop.train`.

The three take the same options (shared ones from `cli.common`) and make the same library call, which
resolves the config, opens the runtime and runs the loop; finetune adds `--from` and `--train`, distill
`--teacher` and `--student`. torch is imported inside the call, so `litevae --help` stays fast. Under
torchrun a non-zero exit (a stop signal, a peer rank gone: exit 1) is what the elastic agent restarts on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import (BatchSizeOpt, CompileOpt, DataOpt, DeviceOpt, DownloadWeightsOpt, EmaOpt, OutDirOpt,
                                    PrecisionOpt, PresetOpt, WeightsDirOpt, WorkersOpt, user_errors)

StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps (overrides train.steps).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set optim.lr=2e-4 "
                                                                    "(repeatable; values are YAML).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run/--no-dry-run", help="Print the resolved config as YAML and exit; writes nothing.")]
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


def _train(command: str, **options) -> None:
    """The one library call (`training.loop.train`); a non-zero exit code (a stop signal) becomes the process's."""
    from litevae_cli.training.loop import train

    code = train(command, **options)
    if code:
        raise typer.Exit(code)


@user_errors
def pretrain(preset: PresetOpt, data: DataOpt, out: OutDirOpt, steps: StepsOpt = None, batch_size: BatchSizeOpt = None,
             device: DeviceOpt = None, precision: PrecisionOpt = None, overrides: SetOpt = None,
             dry_run: DryRunOpt = False, workers: WorkersOpt = None, weights_dir: WeightsDirOpt = None,
             download_weights: DownloadWeightsOpt = False, compile_models: CompileOpt = None) -> None:
    """Phase A: train an autoencoder from scratch (P: 128 px crops, no discriminator).

    Rerunning the same command with the same --out resumes from OUT/checkpoints/last.pt.
    Multi-GPU: torchrun --nproc_per_node N -m litevae_cli pretrain ...
    --batch-size is the global batch of all GPUs; --set train.batch_per_gpu=N sets a batch per GPU instead.

    Examples:\n
      litevae pretrain --preset demo --data sample --out runs/demo\n
      litevae pretrain --preset b-pretrain --data /data/imagenet/train --out runs/b-a --dry-run\n
      litevae pretrain --preset b-pretrain --data /data/imagenet/train --out runs/b-a --download-weights\n
      litevae pretrain --preset b-pretrain --data 'shards/train-{000000..000099}.tar' --out runs/b-a --set optim.lr=2e-4
    """
    _train("pretrain", preset=preset, data=data, out=out, steps=steps, batch_size=batch_size, device=device,
           precision=precision, overrides=overrides or (), dry_run=dry_run, workers=workers, weights_dir=weights_dir,
           download_weights=download_weights, compile=compile_models)


@user_errors
def finetune(preset: PresetOpt, data: DataOpt, out: OutDirOpt, init_from: FromOpt = None, train: TrainOpt = None,
             steps: StepsOpt = None, batch_size: BatchSizeOpt = None, device: DeviceOpt = None,
             precision: PrecisionOpt = None, overrides: SetOpt = None, dry_run: DryRunOpt = False,
             workers: WorkersOpt = None, weights_dir: WeightsDirOpt = None,
             download_weights: DownloadWeightsOpt = False, ema: EmaOpt = True,
            compile_models: CompileOpt = None) -> None:
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
    _train("finetune", preset=preset, data=data, out=out, init_from=init_from, train=train, steps=steps,
           batch_size=batch_size, device=device, precision=precision, overrides=overrides or (), dry_run=dry_run,
           workers=workers, weights_dir=weights_dir, download_weights=download_weights, use_ema=ema, compile=compile_models)


@user_errors
def distill(teacher: TeacherOpt, data: DataOpt, out: OutDirOpt, student: StudentOpt = None,
            preset: PresetOpt = "distill",
            steps: StepsOpt = None, batch_size: BatchSizeOpt = None, device: DeviceOpt = None,
            precision: PrecisionOpt = None, overrides: SetOpt = None, dry_run: DryRunOpt = False,
            workers: WorkersOpt = None, weights_dir: WeightsDirOpt = None,
            download_weights: DownloadWeightsOpt = False, ema: EmaOpt = True,
            compile_models: CompileOpt = None) -> None:
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
    _train("distill", preset=preset, data=data, out=out, teacher=teacher, student=student, steps=steps,
           batch_size=batch_size, device=device, precision=precision, overrides=overrides or (), dry_run=dry_run,
           workers=workers, weights_dir=weights_dir, download_weights=download_weights, use_ema=ema, compile=compile_models)
