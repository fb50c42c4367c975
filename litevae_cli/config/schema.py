"""The training-config schema: one dataclass per preset section, and the value sets they draw on.

The `model` section is a `ModelSpec` (`litevae_cli.model_spec`), the type checkpoints store too. Rules and
loading live beside it (`config.checks`, `config.presets`); `litevae_cli.config` re-exports all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from litevae_cli.model_spec import ModelSpec

PHASES = ("pretrain", "finetune", "distill")  # the subcommand that runs a preset
ADV_KINDS = ("hinge", "non-saturating")  # adversarial losses (training.losses)
LPIPS_NETS = ("alex", "vgg")  # the lpips package's backbones (metrics.weights)


# -------------------- Schema


@dataclass
class DiscriminatorCfg:
    name: Optional[str] = None  # registry name; None = no discriminator (phase A)
    kwargs: dict = field(default_factory=dict)  # overrides passed to the discriminator builder
    loss: str = "hinge"  # hinge (P Table 16 baseline) | non-saturating
    start_step: int = 0  # the adversarial term is on from this step


@dataclass
class DataCfg:
    resolution: int = 128  # square crop side in pixels
    rescale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # OL stochastic rescale range
    workers: int = 4  # DataLoader worker processes per rank


@dataclass
class OptimCfg:
    lr: float = 1e-4  # Adam (P App. F; OL)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    weight_decay: float = 0.0
    disc_lr: float = 1e-4  # the discriminator uses the same settings (P App. F)
    disc_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    smc_gain_lr_mult: float = 1.0  # lr x this for the SMC gains g and scales s (Eq. 3); 1 = P's single lr


@dataclass
class LossCfg:
    # Every term is a mean (reconstruction terms per pixel, KL per latent element): spec "Losses".
    l1: float = 1.0
    lpips: float = 1.0
    lpips_net: str = "alex"  # alex | vgg (the lpips package's backbones)
    lpips_precision: str = "auto"  # fp32 | bf16 | auto: bf16 backbone when the run is bf16 (training.losses)
    kl: float = 1e-3  # from the KL sweep (BENCHMARKS.md "KL weight"); OL used 0.01
    wavelet: float = 1.0  # OL B runs
    gaussian: float = 0.5  # OL B runs
    adversarial: float = 0.1  # constant (P: no adaptive weight); P/OL do not publish it


@dataclass
class TrainCfg:
    steps: int  # optimizer steps of this phase
    batch_size: int = 16  # GLOBAL batch of one optimizer step, over all ranks and micro-batches (P: 16; OL: 32)
    batch_per_gpu: Optional[int] = None  # images per rank per micro-batch; when set it overrides batch_size:
    #                                      global batch = batch_per_gpu x grad_accum x ranks (training.batching)
    grad_accum: int = 1  # micro-batches per optimizer step
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast dtype); auto: bf16 where the hardware has it
    ema_decay: Optional[float] = None  # EMA of the autoencoder weights; None = off (OL default)
    ema_warmup: bool = True  # ramp the EMA decay up at the start (OL)
    seed: int = 0
    max_nonfinite: int = 20  # consecutive non-finite steps before stopping
    keep_checkpoints: int = 0  # numbered checkpoints kept, newest first (last.pt always); 0 = keep all
    trainable: str = "all"  # all | decoder (encoder frozen: the latent space stays) | encoder (distill)


@dataclass
class LogCfg:
    every: int = 100  # steps between status lines / scalars
    sample_every: int = 1000  # steps between reconstruction grids
    checkpoint_every: int = 2000  # steps between checkpoints
    tensorboard: bool = True
    wandb: bool = False  # Weights & Biases too (pip install 'litevae[wandb]'; WANDB_MODE=offline: no network)
    wandb_project: Optional[str] = None  # W&B project; None: $WANDB_PROJECT, else litevae


@dataclass
class DistillCfg:
    """`litevae distill`: a student encoder trained into a frozen teacher's latent space (training.distill)."""
    teacher: Optional[str] = None  # the teacher VAE (any MODEL, a diffusers AutoencoderKL folder too): --teacher
    student: str = "litevae-b"  # an encoder registry name, or a MODEL whose encoder starts the student: --student
    student_kwargs: dict = field(default_factory=dict)  # overrides passed to the student encoder's builder
    mean: float = 1.0  # weight of the squared error of posterior means, per channel over the teacher's latent std
    logvar: float = 0.1  # weight of the log-variance term
    logvar_loss: str = "kl"  # kl: KL of the variances alone | nll: NLL of a teacher sample, student mean detached


@dataclass
class RuntimeCfg:
    """How the run uses its devices: the process group, the memory format and cuDNN's autotuner; no effect
    on the recipe beyond rounding (litevae_cli.runtime)."""
    force_distributed: bool = False  # join a 1-rank process group without torchrun (DDP/NCCL paths on one GPU)
    dist_timeout_s: float = 600.0  # how long a collective waits for the slowest rank before failing
    channels_last: str = "auto"  # auto | on | off; auto: per module (CUDA: GroupNorm-heavy encoders contiguous)
    cudnn_benchmark: str = "auto"  # auto | on | off; auto: on for CUDA training (fixed shapes)
    compile: bool = False  # torch.compile the models and LPIPS in place (models.compiling.compile_in_place)
    compile_backend: Optional[str] = None  # dynamo backend; None: LITEVAE_COMPILE_BACKEND, else inductor


@dataclass
class Config:
    name: str
    phase: str  # pretrain | finetune | distill: the subcommand that runs it (finetune starts from --from CKPT)
    model: Optional[ModelSpec]  # null: the model of --from (finetune) or student + teacher decoder (distill)
    discriminator: DiscriminatorCfg
    data: DataCfg
    optim: OptimCfg
    loss: LossCfg
    train: TrainCfg
    log: LogCfg
    distill: DistillCfg
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)
