"""`make reproduce`: the paper's claims as matched training runs, evaluated on held-out photos.

LiteVAE (Sadat et al. 2024, arXiv 2405.14477) makes five claims a small, fair experiment can show or
fail to show. One baseline arm (LiteVAE encoder + SMC decoder + every loss, pretrained at half
resolution then finetuned at full resolution, P Sec. 5 / App. F) is shared by all claims; each claim
adds one arm that changes only the factor under test, with the same data, steps, batch, seeds and losses:

  sd-encoder  the SD-VAE-architecture encoder, ~5x the params and FLOPs   P Table 1/2a/3, Table 6 (MMD)
  gn-decoder  the GroupNorm (plain SD-VAE) decoder instead of SMC         P Table 4 / Fig. 3
  full-res    phase A at full resolution, as many pixels as the baseline  P Table 5
  no-hf       without the wavelet and Gaussian high-frequency losses      P Table 9

Every arm runs the real commands in a worker process (`reproduce_worker.py`; one per core, pinned, one thread):
`litevae pretrain`, `litevae finetune --from`, `litevae eval` (PSNR/SSIM, posterior mean, uint8, center
crop) and, for the encoder arms, `litevae inspect-latents` (MMD^2 to N(0, I)), all through the CLI app;
then the decoder's feature maps are hooked for the max/mean activation ratio. Encoder img/s is measured
for both encoders side by side in one process. `benchmarks/reproduce/reproduce_report.py` turns the results into
REPRODUCTION.md with a verdict per claim.

    python benchmarks/reproduce/reproduce.py --out bench-results/reproduce            # < 1 h on 2 cores
    python benchmarks/reproduce/reproduce.py --quick --out /tmp/repro                  # every arm, a few steps
    python benchmarks/reproduce/reproduce.py --scale paper --data /data/imagenet/train --holdout /data/imagenet/val \\
        --weights-dir ~/lpips-weights --eval-limit 10000 --jobs 8 --out runs/reproduce-paper   # 8 GPUs

Rerunning with the same --out skips the jobs whose results exist and resumes an interrupted training run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # reproduce_report.py; benchmarks/harness.py


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the CPU study and the paper-scale run."""

    pretrain_preset: str
    finetune_preset: str
    pretrain_res: int  # phase A crop (half of finetune_res, P: 128)
    finetune_res: int  # phase B crop (P: 256)
    pretrain_steps: int
    finetune_steps: int
    eval_res: int  # held-out photos: shorter side resized, center crop (P: 256)
    seeds: tuple[int, ...]
    sd_encoder_kwargs: dict  # the SD-VAE-architecture encoder, sized ~5x the LiteVAE one in params and FLOPs
    batch_size: int | None = None  # None: the presets'
    throughput_batch: int = 4
    throughput_rounds: int = 5
    extra_sets: tuple[str, ...] = ()  # --set for both phases of every arm
    note: str = ""


SCALES: dict[str, Scale] = {
    # 53 min measured on the shared 2-core machine (load 0-9 during the run; less when quiet).
    # litevae-s (1.04 M params, 0.72 GFLOP at 64 px) + 32-channel SMC decoder.
    # SD-VAE encoder at channels 72, mults (1,2,2,3): 5.3x the params, 5.5x the FLOPs (the ratio of
    # P Table 1: 34.16 M vs LiteVAE-B 6.75 M).
    "cpu": Scale("demo", "demo-finetune", 32, 64, 1000, 200, 256, (0, 1),
                 {"logvar_init": -6.0, "channels": 72, "mults": [1, 2, 2, 3]},
                 note="demo presets (LPIPS off: no offline weights), batch 4, EMA 0.99"),
    "quick": Scale("demo", "demo-finetune", 32, 64, 4, 2, 64, (0,),
                   {"logvar_init": -6.0, "channels": 72, "mults": [1, 2, 2, 3]}, batch_size=2,
                   throughput_batch=1, throughput_rounds=1, note="smoke test: every arm for a few steps"),
    # P's recipe: LiteVAE-B + full SMC decoder, 128 px pretrain then 256 px finetune, batch 16, LPIPS (VGG),
    # UNet discriminator; the full SD-VAE encoder (34 M, 5x LiteVAE-B).
    "paper": Scale("b-pretrain", "b-finetune", 128, 256, 100_000, 50_000, 256, (0, 1), {},
                   throughput_batch=32, throughput_rounds=10, note="b-* presets (needs LPIPS VGG weights)"),
}


@dataclass(frozen=True)
class Arm:
    description: str
    sets: tuple[str, ...] = ()  # --set overrides for both phases
    full_res_pretrain: bool = False  # phase A at the finetune resolution, steps scaled to equal pixels
    latents: bool = False  # also inspect-latents (MMD)


def arms(scale: Scale) -> dict[str, Arm]:
    sd = json.dumps(scale.sd_encoder_kwargs)
    return {
        "base": Arm("LiteVAE enc + SMC dec, all losses, half-res pretrain + finetune", latents=True),
        "sd-encoder": Arm("SD-VAE-architecture encoder", ("model.encoder=sd-vae-encoder",
                                                          f"model.encoder_kwargs={sd}"), latents=True),
        "gn-decoder": Arm("GroupNorm (SD-VAE) decoder", ("model.decoder=sd-vae-decoder",)),
        "full-res": Arm("phase A at full resolution, equal pixels", full_res_pretrain=True),
        "no-hf": Arm("without the wavelet and Gaussian losses", ("loss.wavelet=0", "loss.gaussian=0")),
    }


# ------------------------------------------------------------------------------------------------
# Data: the embedded sample photos train; held-out photos are written once to OUT/data/holdout
# ------------------------------------------------------------------------------------------------


def offline_photos() -> dict[str, object]:
    """Natural photos any user has offline: scikit-image's two held-out ones (a dependency), plus those of
    scikit-learn and matplotlib when installed (`pip install -e '.[repro]'`). name -> HxWx3 uint8 array."""
    import skimage.data

    photos: dict[str, object] = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee()}
    try:
        from sklearn.datasets import load_sample_image

        photos.update({n: load_sample_image(f"{n}.jpg") for n in ("china", "flower")})
    except ImportError:
        pass
    try:
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
            import numpy as np

            photos["grace_hopper"] = np.asarray(img.convert("RGB"))
    except ImportError:
        pass
    return photos


def write_holdout(folder: Path) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, array in offline_photos().items():
        if not (folder / f"{name}.png").exists():
            Image.fromarray(array).save(folder / f"{name}.png")
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------------
# The driver: jobs on --jobs cores, skipping finished ones; then the report
# ------------------------------------------------------------------------------------------------


@dataclass
class Slot:
    index: int
    proc: subprocess.Popen | None = None
    unit: list = field(default_factory=list)  # the jobs its worker process runs, one after the other
    log: object = None


def worker_cmd(job_files: list[Path], slot: int, pin: bool) -> list[str]:
    cmd = [sys.executable, str(HERE / "reproduce_worker.py"), *map(str, job_files)]
    if pin and shutil.which("taskset") and slot < (os.cpu_count() or 1):
        cmd = ["taskset", "-c", str(slot), *cmd]
    return cmd


def worker_env(slot: int, cpu: bool) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if cpu:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    else:
        env["CUDA_VISIBLE_DEVICES"] = str(slot)
    return env


def run_jobs(jobs: list[dict], n_slots: int, cpu: bool, out: Path, bundle: bool = False) -> None:
    """Run the jobs whose result does not exist yet, one worker process per job on `n_slots` cores/GPUs;
    with `bundle`, one worker per slot runs its share in turn (saves the start-up of short jobs)."""
    todo = [j for j in jobs if j.get("remeasure") or not Path(j["result"]).exists()]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already done; running {len(todo)} on {n_slots} "
          f"{'core' if cpu else 'device'}(s)", flush=True)
    units = [todo[i::n_slots] for i in range(n_slots)] if bundle else [[j] for j in todo]
    units = [u for u in units if u]
    slots, start, failed, done, total = [Slot(i) for i in range(n_slots)], time.time(), [], 0, len(todo)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    while units or any(s.proc for s in slots):
        for s in slots:
            if s.proc is not None and s.proc.poll() is not None:
                s.log.close()
                for job in s.unit:
                    done += 1
                    ok = s.proc.returncode == 0 and Path(job["result"]).exists()
                    failed += [] if ok else [job["name"]]
                    minutes = (time.time() - start) / 60
                    status = "done" if ok else f"FAILED (see {s.log.name})"
                    print(f"[{done}/{total}] {job['name']} {status} at {minutes:.1f} min, "
                          f"~{minutes / done * (total - done):.0f} min to go", flush=True)
                s.proc = None
            if s.proc is None and units:
                s.unit = units.pop(0)
                files = [out / "jobs" / f"{job['name']}.json" for job in s.unit]
                for f, job in zip(files, s.unit):
                    f.write_text(json.dumps(job, indent=1))
                s.log = open(out / "logs" / f"{s.unit[0]['name']}.log", "a")
                s.proc = subprocess.Popen(worker_cmd(files, s.index, cpu), env=worker_env(s.index, cpu),
                                          stdout=s.log, stderr=subprocess.STDOUT)
        time.sleep(0.5)
    if failed:
        die(f"{len(failed)} job(s) failed: {', '.join(failed)} (logs in {out / 'logs'}); rerun the same command "
            "to resume")


def build_jobs(args, scale: Scale, out: Path, holdout: str) -> tuple[list[dict], dict]:
    seeds = scale.seeds if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
    common = {"data": args.data, "holdout": holdout, "pretrain_preset": scale.pretrain_preset,
              "finetune_preset": scale.finetune_preset, "pretrain_res": scale.pretrain_res,
              "finetune_res": scale.finetune_res, "finetune_steps": scale.finetune_steps, "eval_res": scale.eval_res,
              "batch_size": scale.batch_size, "device": args.device, "eval_limit": args.eval_limit,
              "weights_dir": str(args.weights_dir) if args.weights_dir else None}
    jobs = []
    for name, arm in arms(scale).items():  # arm-major: an interrupted run still has whole claims, both seeds
        for seed in seeds:
            steps = scale.pretrain_steps
            if arm.full_res_pretrain:  # as many pixels as the half-resolution phase A
                steps = max(1, round(steps * (scale.pretrain_res / scale.finetune_res) ** 2))
            sets = [*scale.extra_sets, *arm.sets]
            jobs.append({**common, "name": f"{name}-s{seed}", "kind": "arm", "arm": name, "seed": seed,
                         "sets": sets, "pretrain_steps": steps, "full_res_pretrain": arm.full_res_pretrain,
                         "latents": arm.latents, "run_dir": str(out / "runs" / f"{name}-s{seed}"),
                         "result": str(out / "results" / f"{name}-s{seed}.json")})
    from litevae_cli.config import load_config  # torch-free: the preset's encoder, for the img/s job

    model = load_config(scale.pretrain_preset).model
    tput = {"name": "encoder-throughput", "kind": "throughput", "eval_res": scale.eval_res,
            "train_res": scale.finetune_res, "batch": scale.throughput_batch, "rounds": scale.throughput_rounds,
            "nz": model.nz, "litevae_encoder": model.encoder, "litevae_kwargs": dict(model.encoder_kwargs),
            "sd_kwargs": scale.sd_encoder_kwargs, "device": args.device,
            "result": str(out / "results" / "encoder-throughput.json")}
    return jobs, tput


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench-results/reproduce"), help="results, runs and logs")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="cpu (default, < 1 h on 2 cores), "
                   "quick (a few steps), paper (P's recipe, for GPUs)")
    p.add_argument("--quick", action="store_true", help="same as --scale quick")
    p.add_argument("--data", default="sample", help="training images: a folder, shards, or 'sample' (default)")
    p.add_argument("--holdout", help="held-out images, never trained on (default: the offline photos, written to "
                   "OUT/data/holdout)")
    p.add_argument("--jobs", type=int, default=2, help="parallel workers: one per core (CPU) or per GPU")
    p.add_argument("--seeds", help="comma list, e.g. 0,1,2 (default: the scale's)")
    p.add_argument("--device", help="cpu or cuda (default: the library's choice)")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N held-out images only")
    p.add_argument("--weights-dir", type=Path, help="LPIPS backbone weights (paper scale trains with LPIPS)")
    p.add_argument("--report", type=Path, help="also write the Markdown report here (e.g. REPRODUCTION.md)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the jobs finished so far")
    p.add_argument("--remeasure", action="store_true", help="train nothing: measure the finished arms' final "
                   "checkpoints again (after a change to what is measured), keeping their training record")
    args = p.parse_args(argv)
    if args.quick:
        args.scale = "quick"
    if args.jobs < 1:
        die("--jobs must be at least 1")
    for flag, spec in (("--data", args.data), ("--holdout", args.holdout)):
        if spec and not spec.startswith("sample") and "{" not in spec and not Path(spec).exists():
            die(f"{flag} {spec}: no such folder")
    return args


def die(message: str) -> None:
    """The toolkit's error contract: one line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    args = parse_args(argv)
    scale, out = SCALES[args.scale], args.out
    out.mkdir(parents=True, exist_ok=True)
    cpu = args.device in (None, "cpu") and args.scale != "paper"
    holdout = args.holdout or str(out / "data" / "holdout")
    photos = None if args.holdout else write_holdout(Path(holdout))
    jobs, tput = build_jobs(args, scale, out, holdout)
    if args.remeasure:
        jobs = [dict(j, remeasure=True) for j in jobs]
    start = time.time()
    invocations = load_invocations(out)
    if not args.report_only:
        # img/s last: pinned to its core, beside at most one training job. Quick jobs are short: one worker
        # per core runs its share.
        n_run = sum(bool(j.get("remeasure")) or not Path(j["result"]).exists() for j in [*jobs, tput])
        run_jobs([*jobs, tput], args.jobs, cpu, out, bundle=args.scale == "quick")
        invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)),
                            "minutes": round((time.time() - start) / 60, 2), "jobs_run": n_run,
                            "remeasure": args.remeasure, "command": "python " + " ".join(sys.argv)})
        (out / "invocations.json").write_text(json.dumps(invocations, indent=1))
    finished = [json.loads(Path(j["result"]).read_text()) for j in [*jobs, tput] if Path(j["result"]).exists()]
    results = {"scale": args.scale, "scale_settings": asdict(scale), "command": "python " + " ".join(sys.argv),
               "data": args.data, "holdout": holdout, "holdout_photos": photos, "jobs": args.jobs,
               "arms": {n: asdict(a) for n, a in arms(scale).items()},
               "runs": [r for r in finished if "arm" in r], "planned_runs": len(jobs),
               "encoder_throughput": next((r for r in finished if "arm" not in r), None),
               "wall_minutes_this_invocation": round((time.time() - start) / 60, 2), "invocations": invocations,
               "machine": machine(cpu)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'results.json'}")
    from reproduce_report import render

    text = render(results)
    (out / "REPRODUCTION.md").write_text(text)
    print(f"wrote {out / 'REPRODUCTION.md'}")
    if args.report:
        args.report.write_text(text)
        print(f"wrote {args.report}")
    return 0


def load_invocations(out: Path) -> list[dict]:
    """The wall time of every invocation that ran jobs in OUT (a resumed run has several)."""
    path = out / "invocations.json"
    if path.exists():
        return json.loads(path.read_text())
    old = out / "results.json"  # written by a version that kept only the last invocation's time
    if old.exists() and "invocations" not in (prev := json.loads(old.read_text())):
        return [{"started": None, "minutes": prev["wall_minutes_this_invocation"],
                 "jobs_run": prev["planned_runs"] + 1, "command": prev["command"]}]
    return []


def machine(on_cpu: bool) -> dict:
    from harness import machine_info  # benchmarks/harness.py

    info = machine_info(threads=1)  # each worker runs one thread
    info["cores"] = info["logical_cpus"]
    info["gpu"] = None
    if not on_cpu:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


if __name__ == "__main__":
    raise SystemExit(main())
