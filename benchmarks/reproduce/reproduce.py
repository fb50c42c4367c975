"""`make reproduce`: the paper's claims as matched training runs, judged on held-out photos with paired intervals.

LiteVAE (Sadat et al. 2024, arXiv 2405.14477). Every arm changes ONE factor of the baseline (LiteVAE-S
encoder + SMC decoder, every loss, phase A at half resolution then phase B, presets `repro-pretrain` /
`repro-finetune`, SMC gain lr 1x in every arm); `recipe.py` lists the arms and which claim each pair answers:

  sd-encoder   SD-VAE-architecture encoder (5.3x params)                 P Table 2a (S row), Table 6 (MMD)
  gn-decoder   GroupNorm decoder: same blocks, no mid attention in either, 4-8 channels per group  P Table 4
  full-res     phase A at full resolution, equal steps (the verdict)       P Table 5
  full-res-px  phase A at full resolution, equal pixels (second row)       -
  no-hf / no-wavelet / no-gaussian   the high-frequency losses, together and separately   P Table 9
  b-encoder, b-sd-encoder (--optional)   LiteVAE-B vs the full SD-VAE encoder   P Table 2a (B row)

3 seeds per arm. Every arm runs the real commands in a worker process (`reproduce_worker.py`; one per core,
pinned, one thread): `litevae pretrain`, `litevae finetune --from`, `litevae eval` (the scale's metrics, at
the training resolution and 256 px), per-image PSNR by eval's protocol, latent vectors of many held-out crops
(encoder arms), the decoder's activation ratio. `reproduce_report.py` turns the results into REPRODUCTION.md:
per claim the paired per-image difference with a bootstrap 95% interval over images and seeds (`stats.py`).
Every result file and the report carry the recipe's fingerprint (`recipe.fingerprint`); `reproduce_check.py`
(`make reproduce-check`) compares REPRODUCTION.md's with what this checkout would run.

Budget (default `--scale cpu`, 8 arms x 3 seeds on 2 cores, <= 2.5 h). Per-step costs from the previous
REPRODUCTION.md (same model sizes, batch 4, one thread per job, 2-core AMD EPYC): on a quiet core one arm of
1000 steps at 32 px + 200 at 64 px took 4.9 min (no-hf) and 450 steps at 64 px 4.1 min (full-res), so
~0.17 s per 32 px step and ~0.55 s per 64 px step; the SD-VAE-architecture encoder arm costs ~1.4x, the
GroupNorm decoder ~1.1x; measuring (eval at 64 + 256 px, per-image PSNR, 112 latent crops) ~0.5 min. Per seed:
base, no-hf, no-wavelet, no-gaussian 4 x 5.4 + sd-encoder 7.4 + gn-decoder 5.9 + full-res (1200 steps at
64 px) 11.5 + full-res-px 4.6 = 51 core-min; 3 seeds = 153 core-min = ~77 min on 2 cores, plus ~1 min for
img/s. Measured (2026-12-06, the same machine, a niced job beside it): 66.3 min for the 25 jobs, ~3 min more
for the report. The previous run's arms took 4.1-21 min each under a load of 0-9 from other jobs (the same base arm 4x its quiet
cost), so a busy machine can take up to ~2x the estimate: `--budget-minutes` (150 at this scale) starts no
job after 2.5 h, and the seed-major order leaves complete paired comparisons for every finished seed (the
report says how many). The SD-encoder and GroupNorm factors are from FLOPs and the old arm times.
`--optional` adds the B pair, not in the default budget: the full SD-VAE encoder has ~25x LiteVAE-S's
encoder FLOPs (OL: 137 vs 5.5 GFLOP at 256 px), so its arm alone may cost several times a base arm.

    python benchmarks/reproduce/reproduce.py --out bench-results/reproduce --report REPRODUCTION.md   # ~1.2 h
    python benchmarks/reproduce/reproduce.py --quick --out /tmp/repro                                 # every arm, a few steps
    python benchmarks/reproduce/reproduce.py --scale paper --data /data/imagenet/train --holdout /data/imagenet/val \\
        --weights-dir ~/lpips-weights --eval-limit 50000 --jobs 8 --out runs/reproduce-paper --report REPRODUCTION.md

Rerunning with the same --out skips the jobs whose results exist and resumes an interrupted training run;
results of a different recipe (another fingerprint) in --out are an error, not silently mixed.
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
sys.path[:0] = [str(HERE), str(HERE.parent)]  # recipe.py, reproduce_report.py; benchmarks/harness.py

from recipe import (HOLDOUT, SCALES, build_arm_jobs, fingerprint, scale_record,  # noqa: E402
                    selected_arms)


# ------------------------------------------------------------------------------------------------
# Data: the embedded sample photos train; held-out photos are written once to OUT/data/holdout
# ------------------------------------------------------------------------------------------------


def offline_photos() -> dict[str, object]:
    """The held-out photos of `recipe.HOLDOUT` that this machine has offline, name -> HxWx3 uint8: scikit-image's
    greyscale natural photos (always; as RGB), scikit-learn's china/flower and matplotlib's grace_hopper when
    installed (`pip install -e '.[repro]'`). chelsea and coffee are left out: the demo was tuned on them."""
    import numpy as np
    import skimage.data

    photos: dict[str, object] = {}
    try:
        from sklearn.datasets import load_sample_image

        photos.update({n: load_sample_image(f"{n}.jpg") for n in ("china", "flower")})
    except ImportError:
        pass
    try:
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
            photos["grace_hopper"] = np.asarray(img.convert("RGB"))
    except ImportError:
        pass
    for name in ("camera", "brick", "grass", "gravel"):
        grey = getattr(skimage.data, name)()
        photos[name] = np.repeat(grey[..., None], 3, axis=2)
    return {n: photos[n] for n in HOLDOUT if n in photos}


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


def run_jobs(jobs: list[dict], n_slots: int, cpu: bool, out: Path, bundle: bool = False,
             budget_minutes: float | None = None) -> list[str]:
    """Run the jobs whose result does not exist yet, one worker process per job on `n_slots` cores/GPUs;
    with `bundle`, one worker per slot runs its share in turn (saves the start-up of short jobs). No job
    starts after `budget_minutes`; returns the names of the jobs left unstarted."""
    todo = [j for j in jobs if j.get("remeasure") or not Path(j["result"]).exists()]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already done; running {len(todo)} on {n_slots} "
          f"{'core' if cpu else 'device'}(s)", flush=True)
    units = [todo[i::n_slots] for i in range(n_slots)] if bundle else [[j] for j in todo]
    units = [u for u in units if u]
    slots, start, failed, done, total = [Slot(i) for i in range(n_slots)], time.time(), [], 0, len(todo)
    skipped: list[str] = []
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
            if s.proc is None and units and budget_minutes is not None and time.time() - start > budget_minutes * 60:
                skipped += [j["name"] for u in units for j in u]
                print(f"budget of {budget_minutes:g} min spent: {len(skipped)} job(s) not started", flush=True)
                units = []
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
    return skipped


def build_jobs(args, scale, out: Path, holdout: str) -> tuple[list[dict], dict]:
    seeds = scale.seeds if args.seeds is None else tuple(int(x) for x in args.seeds.split(","))
    names = list(selected_arms(scale, args.optional))
    extra = {"device": args.device, "weights_dir": str(args.weights_dir) if args.weights_dir else None}
    if args.eval_limit is not None:
        extra["eval_limit"] = args.eval_limit
    jobs = build_arm_jobs(scale, names, seeds, out, args.data, holdout, extra)
    from litevae_cli.config import load_config  # torch-free: the preset's encoder, for the img/s job

    model, t = load_config(scale.pretrain_preset).model, scale.throughput
    tput = {"name": "encoder-throughput", "kind": "throughput", "eval_res": t["res"],
            "train_res": max(a.train_res for a in scale.arms.values()), "batch": t["batch"], "rounds": t["rounds"],
            "nz": model.nz, "litevae_encoder": model.encoder, "litevae_kwargs": dict(model.encoder_kwargs),
            "sd_kwargs": t["sd_kwargs"], "device": args.device, "result": str(out / "results" / "encoder-throughput.json")}
    return jobs, tput


def check_existing(jobs: list[dict], fp: dict, out: Path) -> None:
    """Results in OUT from another recipe must not be mixed with this one's."""
    changed = set()
    for job in jobs:
        path = Path(job["result"])
        if path.exists():
            old = (json.loads(path.read_text()).get("fingerprint") or {}).get("arm")
            if old != fp["arms"][job["arm"]]:
                changed.add(job["arm"])
    if changed:
        die(f"{out} holds results of a different recipe for arm(s) {', '.join(sorted(changed))} (their fingerprint "
            "differs from this checkout's): use a new --out, or delete those runs and results")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench-results/reproduce"), help="results, runs and logs")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="cpu (default, ~1.2 h on 2 cores), "
                   "quick (a few steps), paper (P's recipe per table, for GPUs)")
    p.add_argument("--quick", action="store_true", help="same as --scale quick")
    p.add_argument("--data", default="sample", help="training images: a folder, shards, or 'sample' (default)")
    p.add_argument("--holdout", help="held-out images, never trained on (default: the offline photos, written to "
                   "OUT/data/holdout)")
    p.add_argument("--jobs", type=int, default=2, help="parallel workers: one per core (CPU) or per GPU")
    p.add_argument("--seeds", help="comma list, e.g. 0,1,2 (default: the scale's)")
    p.add_argument("--optional", action="store_true", help="also the optional arms (CPU: the LiteVAE-B pair)")
    p.add_argument("--budget-minutes", type=float, help="start no job after this many minutes (default: the "
                   "scale's; cpu: 150); 0: no limit")
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
    seeds = tuple(sorted({j["seed"] for j in jobs}))
    fp = fingerprint(args.scale, seeds, args.optional, args.data)
    for job in jobs:
        job["fingerprint"] = {"arm": fp["arms"][job["arm"]], "recipe": fp["fingerprint"], "code": fp["code"],
                              "commit": fp["commit"], "scale": args.scale}
    check_existing(jobs, fp, out)
    tput["fingerprint"] = {"recipe": fp["fingerprint"], "code": fp["code"], "commit": fp["commit"],
                           "scale": args.scale}
    if args.remeasure:
        jobs = [dict(j, remeasure=True) for j in jobs]
    start = time.time()
    invocations = load_invocations(out)
    budget = scale.budget_minutes if args.budget_minutes is None else (args.budget_minutes or None)
    not_started: list[str] = []
    if not args.report_only:
        # img/s first (short; pinned to its core beside one training job), then the arms seed by seed. Quick
        # jobs are short: one worker per core runs its share.
        n_run = sum(bool(j.get("remeasure")) or not Path(j["result"]).exists() for j in [tput, *jobs])
        not_started = run_jobs([tput, *jobs], args.jobs, cpu, out, bundle=args.scale == "quick", budget_minutes=budget)
        invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)),
                            "minutes": round((time.time() - start) / 60, 2), "jobs_run": n_run - len(not_started),
                            "remeasure": args.remeasure, "command": "python " + " ".join(sys.argv)})
        (out / "invocations.json").write_text(json.dumps(invocations, indent=1))
    finished = [json.loads(Path(j["result"]).read_text()) for j in [*jobs, tput] if Path(j["result"]).exists()]
    results = {"scale": args.scale, "scale_settings": scale_record(scale), "command": "python " + " ".join(sys.argv),
               "data": args.data, "holdout": holdout, "holdout_photos": photos, "jobs": args.jobs,
               "arms": {n: asdict(a) for n, a in selected_arms(scale, args.optional).items()},
               "runs": [r for r in finished if "arm" in r], "planned_runs": len(jobs), "not_started": not_started,
               "budget_minutes": budget, "fingerprint": fp,
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
