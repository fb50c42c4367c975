"""PSNR-vs-minutes curves of short training runs, for tuning the demo and for the KL sweep.

Each ARM is one `litevae pretrain` (optionally followed by a `litevae finetune`) run as a user would
run it, with numbered checkpoints every `--every` steps. The wall clock starts before the process is
launched, so start-up counts. Afterwards every numbered checkpoint is evaluated on the held-out photos
(`sample-holdout`, never trained on) with `litevae eval` at 256 px; with `--latents` the final one also
gets `litevae inspect-latents` on all 9 sample photos (KL nats per latent element, mean posterior std,
MMD to N(0, I)); with
`--extra DIR` the final one is also evaluated on a folder of other photos.

    python benchmarks/tuning/curves.py --out bench-results/curves --arm base --preset demo --steps 400 --every 100 \
        --set optim.lr=1e-3 --set loss.kl=1e-4
Writes OUT/ARM.json (the rows) and prints a Markdown table. CPU jobs: run one arm at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LITEVAE = [sys.executable, "-m", "litevae_cli"]


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def eval_checkpoint(ckpt: Path, data: str, resolution: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        run([*LITEVAE, "eval", str(ckpt), "--data", data, "--metrics", "psnr,ssim", "--resolution", str(resolution),
             "--json", str(out)])
        r = json.loads(out.read_text())["results"][0]
    return {"psnr": r["psnr"], "ssim": r["ssim"]}


def latent_stats(ckpt: Path, data: str, resolution: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "latents.json"
        run([*LITEVAE, "inspect-latents", str(ckpt), "--data", data, "--resolution", str(resolution),
             "--out", tmp, "--json", str(out)])
        j = json.loads(out.read_text())
    return {"kl_nats_per_element": j["kl_per_element"]["mean"], "posterior_std": j["posterior_std"]["mean"],
            "mmd2_sum": j["mmd2_to_standard_normal"]["raw"]["sum"]}


def train_phase(command: str, preset: str, out: Path, steps: int, every: int, sets: list[str],
                init_from: Path | None) -> float:
    cmd = [*LITEVAE, command, "--preset", preset, "--data", "sample", "--out", str(out), "--steps", str(steps),
           "--set", f"log.checkpoint_every={every}", *[a for s in sets for a in ("--set", s)]]
    if init_from is not None:
        cmd += ["--from", str(init_from)]
    t0 = time.time()
    run(cmd)
    return t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arm", required=True, help="name of this run")
    p.add_argument("--preset", default="demo")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--every", type=int, required=True, help="evaluate every N steps")
    p.add_argument("--set", dest="sets", action="append", default=[], help="preset override (repeatable)")
    p.add_argument("--finetune-preset", help="also run this finetune preset from the pretrain's last.pt")
    p.add_argument("--finetune-steps", type=int, default=0)
    p.add_argument("--finetune-set", dest="ft_sets", action="append", default=[])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--latents", action="store_true", help="inspect-latents on the final checkpoint")
    p.add_argument("--extra", help="a folder of other photos to evaluate the final checkpoint on")
    p.add_argument("--holdout", default="sample-holdout", help="the photos every checkpoint is evaluated on "
                   "(default: the demo's held-out pair, which the demo settings were tuned on; give a folder "
                   "of photos no setting was chosen on for a verdict)")
    args = p.parse_args()

    run_dir = args.out / args.arm
    shutil.rmtree(run_dir, ignore_errors=True)
    phases = [("pretrain", args.preset, args.steps, args.sets)]
    if args.finetune_preset:
        phases.append(("finetune", args.finetune_preset, args.finetune_steps, args.ft_sets))
    rows, elapsed, init_from = [], 0.0, None
    for command, preset, steps, sets in phases:
        out = run_dir / command
        t0 = train_phase(command, preset, out, steps, args.every, sets, init_from)
        wall = time.time() - t0
        for ckpt in sorted((out / "checkpoints").glob("step-*.pt")):
            rows.append({"phase": command, "step": int(ckpt.stem.split("-")[1]),
                         "minutes": round((elapsed + os.path.getmtime(ckpt) - t0) / 60, 3),
                         **eval_checkpoint(ckpt, args.holdout, args.resolution)})
            print(json.dumps(rows[-1]), flush=True)
        elapsed += wall
        init_from = out / "checkpoints" / "last.pt"
    final = {"arm": args.arm, "sets": args.sets, "ft_sets": args.ft_sets, "train_minutes": round(elapsed / 60, 3),
             **eval_checkpoint(init_from, args.holdout, args.resolution)}
    if args.latents:
        final.update(latent_stats(init_from, "sample-all", args.resolution))  # MMD needs more than 2 images
    if args.extra:
        final["extra"] = eval_checkpoint(init_from, args.extra, args.resolution)
    (args.out / f"{args.arm}.json").write_text(json.dumps({"final": final, "rows": rows}, indent=1))
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
