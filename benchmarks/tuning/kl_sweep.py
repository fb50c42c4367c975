"""The KL weight sweep, long enough for the KL term to act (issue 23; replaces kl_sweep.sh's 300-step runs).

One `litevae pretrain` per weight: the reproduction model (presets/repro-pretrain.yaml: LiteVAE-S + 32-channel
SMC decoder) at 64 px for 2000 steps, the log-variance bias initialised at 0 as in the b-presets (posterior
std 1 at the start, so the KL term has something to shrink or keep), same data, seed and steps for every
weight. Weights, per latent element (every loss term here is a mean; LDM sums reconstruction and KL per image):
  6.25e-8  LDM's kl_weight 1e-6 in our units: 1e-6 * nz / (3 * 8 * 8) = 1e-6 * 12 / 192 at nz 12
  2e-6, 4e-5  two between, evenly spaced in log (a factor ~20 apart)
  1e-3     the presets' current value (LDM equivalent 1.6e-2 at nz 12)
Each checkpoint (every 250 steps) is measured on the held-out photos of `make reproduce` (none trained on,
none tuned on; not chelsea/coffee): per-image PSNR at 64 px (eval's protocol), KL nats per latent element and
the mean posterior std over 16 random 128 px crops per photo, and at the end the MMD^2 of the channel-
standardised posterior samples to N(0, I) (`benchmarks/reproduce/stats.py`) and the diffusability proxy.

Diffusability proxy: the share of the latent means' spatial power above half their Nyquist frequency
(`stats.hf_energy`; white noise ~0.80). A diffusion model resolves low frequencies first and its late,
low-noise steps must produce whatever high-frequency content the latent has; latents whose spectrum is
noise-like are harder to model (Skorokhodov et al. 2025, "Improving the diffusability of autoencoders").
It needs no diffusion training, is deterministic, and a KL term that pushes the posterior toward
independent N(0, 1) noise moves it up: the cost side of a stronger weight.

Rule for the b-preset default (RULE below, applied by `choose`): the term must act (final KL per element at
least 10% below the LDM-equivalent arm's); among the weights where it acts, the largest whose per-image
PSNR is within 0.2 dB of the LDM-equivalent arm's (paired mean over photos) and whose high-frequency
share is not above the LDM arm's by more than 0.05. If the term acts nowhere, the sweep says nothing and the
default stays, flagged. What 100k steps at 256 px would do is still unknown after this sweep.

Cost (not run in this session): 0.55 s per 64 px step on one core (REPRODUCTION.md's previous run) ->
2000 steps ~18 min per weight, two weights at a time on 2 cores -> ~37 min, plus ~3 min of measuring.

    python benchmarks/tuning/kl_sweep.py --out bench-results/kl-sweep     # ~40 min on 2 cores
    python benchmarks/tuning/kl_sweep.py --quick --out /tmp/kl             # 2 weights, a few steps (make test)
Writes OUT/kl_sweep.json, OUT/kl_sweep.md (table, curves, the rule and its choice, for BENCHMARKS.md) and
OUT/kl_curves.png when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "benchmarks" / "reproduce")]
from stats import hf_energy, latent_mmd  # noqa: E402

NZ, PIXELS_PER_LATENT = 12, 3 * 8 * 8
LDM = 1e-6 * NZ / PIXELS_PER_LATENT  # 6.25e-8
WEIGHTS = (LDM, 2e-6, 4e-5, 1e-3)
CURRENT = 1e-3
RULE = ("the KL term must act (final KL per element >= 10% below the LDM-equivalent arm's); among those weights, "
        "the largest whose per-image PSNR is within 0.2 dB of the LDM-equivalent arm's and whose high-frequency "
        "share exceeds the LDM arm's by at most 0.05; if the term acts nowhere, keep the current default (flagged)")


def arm_name(w: float) -> str:
    return f"kl{w:.3g}"


def train_cmd(w: float, out: Path, steps: int, every: int, batch: int | None) -> list[str]:
    sets = [f"loss.kl={w!r}", "model.encoder_kwargs.logvar_init=0.0", "data.resolution=64", "train.seed=0",
            f"log.checkpoint_every={every}", f"log.every={every}", f"log.sample_every={steps}"]
    cmd = [sys.executable, "-m", "litevae_cli", "pretrain", "--preset", "repro-pretrain", "--data", "sample",
           "--out", str(out), "--steps", str(steps), *[a for s in sets for a in ("--set", s)]]
    return cmd + (["--batch-size", str(batch)] if batch else [])


def train_all(weights, out: Path, steps: int, every: int, jobs: int, batch: int | None) -> None:
    """Each weight a `litevae pretrain` process, `jobs` at a time, each pinned to a core no other job holds
    (one thread each). The core freed by a finished job goes to the next one."""
    import time

    todo = [w for w in weights if not (out / arm_name(w) / "checkpoints" / "last.pt").exists()]
    running: dict[int, subprocess.Popen] = {}  # slot (core) -> process
    while todo or running:
        for slot in range(jobs):
            if todo and slot not in running:
                w = todo.pop(0)
                cmd = train_cmd(w, out / arm_name(w), steps, every, batch)
                if shutil.which("taskset") and slot < (os.cpu_count() or 1):
                    cmd = ["taskset", "-c", str(slot), *cmd]
                env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
                log = open(out / f"{arm_name(w)}.log", "a")
                running[slot] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        for slot, proc in list(running.items()):
            if proc.poll() is not None:
                del running[slot]
                if proc.returncode:
                    for other in running.values():
                        other.terminate()
                    raise SystemExit(f"error: training failed (exit {proc.returncode}); see the logs in {out}")
        time.sleep(0.5)


def measure(ckpt: Path, holdout: str, crops: int, final: bool, size: int = 128, limit: int | None = None) -> dict:
    """Held-out figures of one checkpoint (see the module docstring)."""
    import numpy as np
    import torch

    from litevae_cli import runtime
    from litevae_cli.data.loaders import make_eval_loader
    from litevae_cli.files.model_file import load_autoencoder
    from litevae_cli.metrics.evaluate import reconstruct_uint8
    from litevae_cli.metrics.image import psnr_uint8

    model = load_autoencoder(ckpt).model.eval()
    names, psnr = [], []
    with runtime.open("cpu", "fp32", distributed=False) as rt, torch.no_grad():
        for batch in make_eval_loader(holdout, 64, 4, limit=limit):
            psnr += psnr_uint8(*reconstruct_uint8(model, batch["images"], rt)).tolist()
            names += [m["key"] for m in batch["meta"]]
        gen, kl, std, means, samples = torch.Generator().manual_seed(1234), [], [], [], []
        for batch in make_eval_loader(holdout, 2 * size, 1, limit=limit):
            corners = torch.randint(0, size + 1, (crops, 2), generator=gen).tolist()
            x = torch.cat([batch["images"][:, :, y:y + size, x:x + size] for y, x in corners])  # one batch per photo
            post = model.encode(x)
            kl += (0.5 * (post.mean ** 2 + post.var - 1 - post.logvar)).flatten(1).mean(1).tolist()
            std += post.std.flatten(1).mean(1).tolist()
            means += list(post.mean.numpy())
            z = post.sample(torch.Generator().manual_seed(len(samples)))
            samples += list(z.flatten(2).transpose(1, 2).numpy())
    row = {"psnr": float(np.mean(psnr)), "per_image": dict(zip(names, psnr)), "kl_nats_per_element": float(np.mean(kl)),
           "posterior_std": float(np.mean(std))}
    if final:
        row["mmd2_normalised"] = latent_mmd(np.stack(samples), standardise=True)["sum"]
        row["mmd2_raw"] = latent_mmd(np.stack(samples))["sum"]
        row["hf_energy"] = hf_energy(np.stack(means))
    return row


def choose(rows: dict) -> tuple[float | None, str]:
    """(weight, why) by RULE; rows: weight -> final row (with per_image PSNR). None: the sweep says nothing."""
    ldm = rows[min(rows)]
    acting = [w for w, r in rows.items() if w != min(rows) and r["kl_nats_per_element"] <= 0.9 * ldm["kl_nats_per_element"]]
    if not acting:
        return None, (f"the KL term did not act (final KL per element within 10% of the weakest weight's for every "
                      f"weight): no choice; the default {CURRENT:g} stays, untested")
    ok = []
    for w in acting:
        common = set(rows[w]["per_image"]) & set(ldm["per_image"])
        d = sum(rows[w]["per_image"][n] - ldm["per_image"][n] for n in common) / max(1, len(common))
        if d >= -0.2 and rows[w]["hf_energy"] <= ldm["hf_energy"] + 0.05:
            ok.append(w)
    if not ok:
        return min(acting), (f"every weight where the term acts costs > 0.2 dB or raises the HF share: the weakest "
                             f"acting one, {min(acting):g}")
    return max(ok), f"{max(ok):g}: the largest acting weight within 0.2 dB of the LDM-equivalent arm (RULE)"


def report(result: dict) -> str:
    rows, curves = result["final"], result["curves"]
    lines = ["| loss.kl (per element) | LDM kl_weight (nz 12) | PSNR @64 dB | KL nats/elem | posterior std | "
             "MMD^2 std. latents | MMD^2 raw | HF share |", "|---|---|---|---|---|---|---|---|"]
    for w, r in sorted(rows.items(), key=lambda kv: float(kv[0])):
        lines.append(f"| {float(w):.3g} | {float(w) * PIXELS_PER_LATENT / NZ:.3g} | {r['psnr']:.2f} | "
                     f"{r['kl_nats_per_element']:.3f} | {r['posterior_std']:.3f} | {r['mmd2_normalised']:.4f} | "
                     f"{r['mmd2_raw']:.4f} | {r['hf_energy']:.3f} |")
    lines += ["", "Curves (held-out, every checkpoint):", "", "| loss.kl | step | PSNR @64 | KL nats/elem | posterior std |",
              "|---|---|---|---|---|"]
    for w, pts in sorted(curves.items(), key=lambda kv: float(kv[0])):
        lines += [f"| {float(w):.3g} | {p['step']} | {p['psnr']:.2f} | {p['kl_nats_per_element']:.3f} | "
                  f"{p['posterior_std']:.3f} |" for p in pts]
    lines += ["", f"Rule: {RULE}.", "", f"Choice: {result['why']}", "",
              f"{result['steps']} steps at 64 px per weight, repro-pretrain model, logvar init 0 (as the b-presets), "
              f"seed 0; held-out photos: {', '.join(result['photos'])}."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for w, pts in sorted(result["curves"].items(), key=lambda kv: float(kv[0])):
        steps = [p["step"] for p in pts]
        for ax, key in zip(axes, ("psnr", "kl_nats_per_element", "posterior_std")):
            ax.plot(steps, [p[key] for p in pts], marker="o", label=f"kl {float(w):.3g}")
            ax.set_xlabel("step")
            ax.set_title(key)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench-results/kl-sweep"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--every", type=int, default=250, help="measure every N steps (the curves)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--crops", type=int, default=16, help="random 128 px crops per held-out photo for KL/MMD")
    p.add_argument("--crop", type=int, default=128, help="crop side for KL/MMD/HF (latents of crop/8)")
    p.add_argument("--limit", type=int, help="measure on the first N held-out photos only")
    p.add_argument("--quick", action="store_true", help="2 weights, 4 steps, 3 photos, 2 crops of 64 px: a smoke test")
    args = p.parse_args(argv)
    weights, batch = WEIGHTS, None
    if args.quick:
        weights, args.steps, args.every, args.crops, args.crop, args.limit, batch = (LDM, CURRENT), 4, 2, 2, 64, 3, 2
    args.out.mkdir(parents=True, exist_ok=True)
    from reproduce import write_holdout  # the verdict photos of `make reproduce`

    photos = write_holdout(args.out / "holdout")
    train_all(weights, args.out, args.steps, args.every, args.jobs, batch)
    final, curves = {}, {}
    for w in weights:
        ckpts = sorted((args.out / arm_name(w) / "checkpoints").glob("step-*.pt"), key=lambda c: int(c.stem[5:]))
        kw = {"holdout": str(args.out / "holdout"), "crops": args.crops, "size": args.crop, "limit": args.limit}
        curves[repr(w)] = [{"step": int(c.stem[5:]), **{k: v for k, v in measure(c, final=False, **kw).items()
                                                         if k != "per_image"}} for c in ckpts]
        final[w] = measure(args.out / arm_name(w) / "checkpoints" / "last.pt", final=True, **kw)
    choice, why = choose(final)
    from recipe import code_version, commit

    result = {"weights": list(weights), "steps": args.steps, "photos": photos, "choice": choice, "why": why,
              "code": code_version(), "commit": commit(),
              "final": {repr(w): r for w, r in final.items()}, "curves": curves, "rule": RULE}
    (args.out / "kl_sweep.json").write_text(json.dumps(result, indent=1))
    (args.out / "kl_sweep.md").write_text(report(result))
    png = plot(result, args.out / "kl_curves.png")
    print(report(result) + f"wrote {args.out / 'kl_sweep.json'}, kl_sweep.md" + (", kl_curves.png" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
