"""What `make reproduce` runs: the scales, their arms (one changed factor each), the claims each pair of arms
answers, the jobs, the exact `litevae` arguments of every phase, and the recipe's fingerprint.

Torch-free at import; `fingerprint()` resolves every arm's configs with the project's own loader
(`litevae_cli.config.resolve_config`, exactly as `litevae pretrain/finetune` resolves them in the worker),
so the fingerprint changes whenever a preset, an arm's `--set`, a step count, a resolution, a seed, the
evaluation, or the model/loss code changes. The commit is recorded beside it, not hashed into it (a
commit that changes none of these leaves the numbers as they were).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The model code's version: what builds the networks and the losses they are trained with.
CODE_GLOBS = ("litevae_cli/models/*.py", "litevae_cli/training/losses.py")

# Held-out photos for every verdict: none was trained on (`sample` = the 7 scikit-image colour photos) and
# none was used to tune a setting (the demo and the KL sweep were tuned on chelsea and coffee, left out here).
# Colour: scikit-learn's china and flower, matplotlib's grace_hopper (pip install -e '.[repro]'); greyscale
# natural photos shipped in the scikit-image wheel (as RGB): camera, brick, grass, gravel.
HOLDOUT = ("china", "flower", "grace_hopper", "camera", "brick", "grass", "gravel")
MMD_CROPS_PER_PHOTO = 16  # random crops per held-out photo whose latent positions feed the MMD (P Table 6)

# CPU-scale encoders and decoders: the SD-VAE-architecture encoder at 5.3x the params, 5.5x the FLOPs of
# LiteVAE-S; the GroupNorm decoder identical to the SMC one but for normalisation (no mid attention in
# either; norm_groups 8 = SD-VAE's 32 groups at 128 channels scaled to this 32-channel decoder: 4 channels
# per group at the narrowest level, 8 at the widest, as SD-VAE's 4 and 16).
SD_ENC_CPU = {"logvar_init": -6.0, "channels": 72, "mults": [1, 2, 2, 3]}
GN_DEC_CPU = {"channels": 32, "mults": [1, 2, 2, 2], "mid_attention": False, "norm_groups": 8}
GN_DEC_PAPER = {"mid_attention": False}  # SD-VAE's decoder at full width (128 ch, 32 groups: 4-16 per group)
DISC_ON = ("discriminator.name=unet-disc-s", "loss.adversarial=0.1")  # one-phase paper arms: as b-finetune


def sets_json(key: str, value: dict) -> str:
    return f"{key}={json.dumps(value)}"


@dataclass(frozen=True)
class Arm:
    description: str
    sets: tuple[str, ...] = ()  # --set overrides for both phases
    pretrain: tuple[int, int] = (32, 1000)  # phase A (resolution, steps)
    finetune: tuple[int, int] | None = (64, 200)  # phase B (resolution, steps); None: one phase only
    eval_res: tuple[int, ...] = (64, 256)  # the first decides the verdict: the training resolution
    latents: bool = False  # also the latent vectors for the MMD (P Table 6)
    optional: bool = False  # run only with --optional
    source: str = ""  # where the paper states this arm's recipe

    @property
    def train_res(self) -> int:
        return (self.finetune or self.pretrain)[0]


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the CPU study, its smoke test and the paper-scale run."""

    pretrain_preset: str
    finetune_preset: str
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]  # `litevae eval --metrics`: from the scale, never hard-coded in the worker
    arms: dict
    claims: dict  # claim key (reproduce_report.CLAIMS) -> (base arm, variant arm)
    batch_size: int | None = None  # None: the presets'
    throughput: dict = field(default_factory=dict)  # encoder img/s job: res, batch, rounds, sd kwargs
    budget_minutes: float | None = None  # no job starts after this many minutes (the run is then partial)
    eval_limit: int | None = None  # evaluate on the first N held-out photos only (None: all)
    latent_crops: int = MMD_CROPS_PER_PHOTO  # random crops per held-out photo for the latent vectors
    note: str = ""


def cpu_arms(a: int = 1000, b: int = 200, lo: int = 32, hi: int = 64, ev: tuple[int, ...] = (64, 256)) -> dict:
    sd = ("model.encoder=sd-vae-encoder", sets_json("model.encoder_kwargs", SD_ENC_CPU))
    kw = dict(pretrain=(lo, a), finetune=(hi, b), eval_res=ev)
    return {
        "base": Arm("LiteVAE-S enc + SMC dec, all losses, half-res phase A + phase B", latents=True, **kw),
        "sd-encoder": Arm("SD-VAE-architecture encoder (5.3x params)", sd, latents=True, **kw),
        "gn-decoder": Arm("GroupNorm decoder: same blocks, no attention (as SMC's), 4-8 channels/group",
                          ("model.decoder=sd-vae-decoder", sets_json("model.decoder_kwargs", GN_DEC_CPU)), **kw),
        "full-res": Arm("phase A at full resolution, equal steps", pretrain=(hi, a), finetune=(hi, b), eval_res=ev),
        "full-res-px": Arm("phase A at full resolution, equal pixels (1/4 of the steps)",
                           pretrain=(hi, max(1, a // 4)), finetune=(hi, b), eval_res=ev),
        "no-hf": Arm("without the wavelet and Gaussian losses", ("loss.wavelet=0", "loss.gaussian=0"), **kw),
        "no-wavelet": Arm("without the wavelet loss (Gaussian kept)", ("loss.wavelet=0",), **kw),
        "no-gaussian": Arm("without the Gaussian loss (wavelet kept)", ("loss.gaussian=0",), **kw),
        "b-encoder": Arm("LiteVAE-B encoder (6.75 M)", ("model.encoder=litevae-b",), optional=True, **kw),
        "b-sd-encoder": Arm("the full SD-VAE encoder (34 M, 5x LiteVAE-B)",
                            ("model.encoder=sd-vae-encoder", sets_json("model.encoder_kwargs", {"logvar_init": -6.0})),
                            optional=True, **kw),
    }


CPU_CLAIMS = {"t2a-s": ("base", "sd-encoder"), "t2a-b": ("b-encoder", "b-sd-encoder"), "t4": ("base", "gn-decoder"),
              "t5": ("base", "full-res"), "t5-px": ("base", "full-res-px"), "t6": ("base", "sd-encoder"),
              "t9": ("base", "no-hf"), "t9-wavelet": ("base", "no-wavelet"), "t9-gaussian": ("base", "no-gaussian")}


def paper_arms() -> dict:
    """P's recipe per table (App. D/F, the table captions): batch 16, Adam 1e-4 (0.5, 0.9), UNet discriminator,
    ImageNet; the 128 px ablation model trains 200k steps (App. F) with every loss; the decoder is SD-VAE's
    (GroupNorm) except in the SMC experiment (App. F); Table 5 has nz 4 (its figures are Table 1's 32x32x4 row)."""
    gn = ("model.decoder=sd-vae-decoder",)  # SD-VAE's decoder exactly (App. F), mid attention included
    gn_t4 = ("model.decoder=sd-vae-decoder", sets_json("model.decoder_kwargs", GN_DEC_PAPER))  # one variable
    sd = ("model.encoder=sd-vae-encoder", sets_json("model.encoder_kwargs", {}))
    one128 = dict(pretrain=(128, 200_000), finetune=None, eval_res=(128,))
    two256 = dict(pretrain=(128, 100_000), finetune=(256, 50_000), eval_res=(256,))
    t128 = "P App. F: ImageNet 128 models, 200k steps; Sec. 6: the 128 px nz 12 model is every ablation's baseline"
    return {
        "base": Arm("LiteVAE-B + SMC decoder, all losses, 128 px", DISC_ON, source=t128, latents=True, **one128),
        "gn-decoder": Arm("GroupNorm decoder (SD-VAE's, no attention as SMC's)", (*DISC_ON, *gn_t4), source="P Table 4",
                          **one128),
        "no-hf": Arm("without the wavelet and Gaussian losses (Table 9 baseline)",
                     (*DISC_ON, "loss.wavelet=0", "loss.gaussian=0"), source="P Table 9", **one128),
        "no-wavelet": Arm("without the wavelet loss (Table 9 '+ Gaussian')", (*DISC_ON, "loss.wavelet=0"),
                          source="P Table 9", **one128),
        "no-gaussian": Arm("without the Gaussian loss (not in P)", (*DISC_ON, "loss.gaussian=0"), source="ours",
                           **one128),
        "s-encoder": Arm("LiteVAE-S + SD-VAE decoder", (*DISC_ON, *gn, "model.encoder=litevae-s"),
                         source="P Table 2a", **one128),
        "b-encoder": Arm("LiteVAE-B + SD-VAE decoder", (*DISC_ON, *gn), source="P Table 2a", **one128),
        "vae-encoder": Arm("SD-VAE encoder + SD-VAE decoder", (*DISC_ON, *gn, *sd), source="P Table 2a", latents=True,
                           **one128),
        "t1-litevae": Arm("LiteVAE-B + SD-VAE decoder, 100k@128 + 50k@256", gn, source="P Table 1, Table 5, App. F",
                          latents=True, **two256),
        "t1-vae": Arm("SD-VAE encoder + SD-VAE decoder, 100k@128 + 50k@256", (*gn, *sd), source="P Table 1",
                      latents=True, **two256),
        "t5-tuned": Arm("nz 4: 100k@128 + 50k@256 (128-tuned)", (*gn, "model.nz=4"), source="P Table 5", **two256),
        "t5-full": Arm("nz 4: 150k@256 (256-full)", (*gn, *DISC_ON, "model.nz=4"), pretrain=(256, 150_000),
                       finetune=None, eval_res=(256,), source="P Table 5"),
        "t5-128full": Arm("nz 4: 150k@128 (128-full)", (*gn, *DISC_ON, "model.nz=4"), pretrain=(128, 150_000),
                          finetune=None, eval_res=(256,), source="P Table 5", optional=True),
    }


PAPER_CLAIMS = {"t1": ("t1-litevae", "t1-vae"), "t2a-s": ("s-encoder", "vae-encoder"),
                "t2a-b": ("b-encoder", "vae-encoder"), "t4": ("base", "gn-decoder"), "t5": ("t5-tuned", "t5-full"),
                "t6": ("t1-litevae", "t1-vae"), "t9": ("base", "no-hf"), "t9-wavelet": ("base", "no-wavelet"),
                "t9-gaussian": ("base", "no-gaussian")}

SCALES: dict[str, Scale] = {
    "cpu": Scale("repro-pretrain", "repro-finetune", (0, 1, 2), ("psnr", "ssim"), cpu_arms(), CPU_CLAIMS,
                 throughput={"res": 256, "batch": 4, "rounds": 5, "sd_kwargs": SD_ENC_CPU}, budget_minutes=150,
                 note="repro-* presets (LPIPS off: no offline weights), batch 4, EMA 0.99"),
    "quick": Scale("repro-pretrain", "repro-finetune", (0,), ("psnr", "ssim"), cpu_arms(4, 2, 32, 64, (64,)),
                   CPU_CLAIMS, batch_size=2, throughput={"res": 64, "batch": 1, "rounds": 1, "sd_kwargs": SD_ENC_CPU},
                   eval_limit=3, latent_crops=4,
                   note="smoke test: every arm for a few steps"),
    "paper": Scale("b-pretrain", "b-finetune", (0, 1, 2), ("rfid", "lpips", "psnr", "ssim"), paper_arms(),
                   PAPER_CLAIMS, throughput={"res": 256, "batch": 32, "rounds": 10, "sd_kwargs": {}},
                   note="b-* presets (LPIPS VGG weights needed), ImageNet"),
}


def selected_arms(scale: Scale, optional: bool = False) -> dict:
    return {n: a for n, a in scale.arms.items() if optional or not a.optional}


# ------------------------------------------------------------------------------------------------
# The exact `litevae` arguments of a phase, shared by the worker (which runs them) and the fingerprint
# ------------------------------------------------------------------------------------------------


def phase_sets(sets: list[str], res: int, seed: int, steps: int) -> list[str]:
    every = max(1, min(steps // 8, 1000))  # a status line per 1/8 of a short run, per 1000 steps of a long one
    return [*sets, f"data.resolution={res}", f"train.seed={seed}", f"log.every={every}", f"log.sample_every={steps}",
            f"log.checkpoint_every={max(1, min(steps // 4, 5000))}"]


def phase_plan(job: dict) -> list[dict]:
    """[{command, preset, res, steps, sets, flags}] for phase A and (if any) phase B of an arm job."""
    plan = [{"command": "pretrain", "preset": job["pretrain_preset"], "res": job["pretrain_res"],
             "steps": job["pretrain_steps"]}]
    if job["finetune_steps"]:
        plan.append({"command": "finetune", "preset": job["finetune_preset"], "res": job["finetune_res"],
                     "steps": job["finetune_steps"]})
    for p in plan:
        p["sets"] = phase_sets(job["sets"], p["res"], job["seed"], p["steps"])
        p["flags"] = {"--steps": p["steps"], "--batch-size": job.get("batch_size")}
    return plan


def build_arm_jobs(scale: Scale, names: list[str], seeds: tuple[int, ...], out: Path, data: str, holdout: str,
                   extra: dict | None = None) -> list[dict]:
    """Seed-major (every arm of seed 0, then of seed 1, ...): a run cut short by the budget still has
    complete, paired comparisons for the seeds it finished."""
    jobs, extra = [], {"eval_limit": scale.eval_limit, "latent_crops": scale.latent_crops, **(extra or {})}
    for seed in seeds:
        for name in names:
            arm = scale.arms[name]
            fin = arm.finetune or (0, 0)
            jobs.append({**extra, "name": f"{name}-s{seed}", "kind": "arm", "arm": name, "seed": seed,
                         "data": data, "holdout": holdout, "pretrain_preset": scale.pretrain_preset,
                         "finetune_preset": scale.finetune_preset, "pretrain_res": arm.pretrain[0],
                         "pretrain_steps": arm.pretrain[1], "finetune_res": fin[0], "finetune_steps": fin[1],
                         "eval_res": list(arm.eval_res), "metrics": list(scale.metrics), "sets": list(arm.sets),
                         "batch_size": scale.batch_size, "latents": arm.latents,
                         "run_dir": str(out / "runs" / f"{name}-s{seed}"),
                         "result": str(out / "results" / f"{name}-s{seed}.json")})
    return jobs


# ------------------------------------------------------------------------------------------------
# The fingerprint
# ------------------------------------------------------------------------------------------------


def sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def code_version(root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for pattern in CODE_GLOBS:
        for path in sorted(root.glob(pattern)):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def commit(root: Path = ROOT) -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
    except OSError:
        return None
    return (head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) if head.returncode == 0 else None


def resolved_arm(job: dict) -> dict:
    """What decides one job's numbers: each phase's config as `litevae` resolves it, and the evaluation."""
    from litevae_cli.config import config_to_dict, resolve_config

    phases = [{"command": p["command"], "config": config_to_dict(resolve_config(p["preset"], p["sets"], p["flags"],
                                                                                phase=p["command"]))}
              for p in phase_plan(job)]
    return {"seed": job["seed"], "data": job["data"], "phases": phases, "eval_res": job["eval_res"],
            "metrics": job["metrics"], "latents": job["latents"], "holdout": list(HOLDOUT),
            "eval_limit": job.get("eval_limit"), "latent_crops": job.get("latent_crops")}


def fingerprint(scale_name: str, seeds: tuple[int, ...] | None = None, optional: bool = False,
                data: str = "sample") -> dict:
    """{"fingerprint", "code", "arms": {arm: sha256}, "scale", "seeds", "commit"}: the hash of every arm's
    resolved configs (all seeds) and of the model/loss code; the commit is recorded, not hashed."""
    scale = SCALES[scale_name]
    seeds = tuple(seeds or scale.seeds)
    names = list(selected_arms(scale, optional))
    jobs = build_arm_jobs(scale, names, seeds, Path("OUT"), data, "HOLDOUT")
    arms = {n: sha256([resolved_arm(j) for j in jobs if j["arm"] == n]) for n in names}
    code = code_version()
    return {"fingerprint": sha256({"arms": arms, "code": code}), "code": code, "arms": arms, "scale": scale_name,
            "seeds": list(seeds), "optional": optional, "data": data, "commit": commit()}


def scale_record(scale: Scale) -> dict:
    return {k: v for k, v in asdict(scale).items() if k != "arms"}
