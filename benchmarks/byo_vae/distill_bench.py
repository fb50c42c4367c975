"""Bring your own VAE, measured at demo scale (issue 21): distill LiteVAE encoders into a VAE nobody tuned for it.

Stages, each a plain `litevae` command (skipped when its output exists, so a rerun resumes):
  1. teacher: an SD-VAE-architecture autoencoder (sd-vae-encoder + sd-vae-decoder, widths 32-64-64-64,
     2 ResBlocks per level, mid attention, nz 4) trained with the `demo` preset's settings untouched
     (900 steps at 64 px on the 7 sample photos); encode-dataset statistics; exported as a diffusers
     AutoencoderKL folder (`export --format diffusers --stats`), which every later stage reads back as a
     user's SD VAE folder would be read.
  2. distill: `litevae distill --teacher <folder> --student litevae-s|litevae-b` (preset `distill` at demo
     size: 64 px, batch 4, lr 3e-4, LPIPS off), checkpoints every --every steps for the curves.
  3. decoder-only finetune of the teacher (`finetune --preset sd-decoder-ft`, LPIPS off, same demo size).
  4. measured on held-out photos never trained on (chelsea, coffee; china, flower, grace_hopper where
     scikit-learn / matplotlib are installed), center crop at 256 px, posterior means (EMA weights):
     latent PSNR of the student's means against the teacher's over the teacher latents' range, per-channel
     correlation, image PSNR/SSIM of student-encode -> teacher-decode against the input and against the
     teacher's own round trip; encoder img/s (students vs teacher vs the full-width SD-VAE encoder
     architecture, nz 4, random weights) at 256 px, interleaved in one process (harness.time_interleaved).

    python benchmarks/byo_vae/distill_bench.py --out bench-results/distill   # ~45 min on 2 CPU cores
    python benchmarks/byo_vae/distill_bench.py --quick                        # toy sizes: checks the pipeline runs

Writes OUT/results.json and OUT/results.md (the tables BENCHMARKS.md quotes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "reproduce")]  # harness.py, reproduce.py
import harness  # noqa: E402
from reproduce import write_holdout  # noqa: E402

TEACHER_MODEL = ["model.encoder=sd-vae-encoder", "model.decoder=sd-vae-decoder", "model.nz=4",
                 "model.encoder_kwargs={channels: 32, mults: [1, 2, 2, 2], logvar_init: -6.0}",
                 "model.decoder_kwargs={channels: 32, mults: [1, 2, 2, 2]}", "optim.smc_gain_lr_mult=1.0"]
DEMO_SIZE = ["data.resolution=64", "data.workers=0", "train.batch_size=4", "train.precision=fp32",
             "loss.lpips=0", "train.ema_decay=0.99", "train.ema_warmup=false", "log.tensorboard=false",
             "train.keep_checkpoints=0", "log.every=25"]


def litevae(*args: str) -> None:
    cmd = [sys.executable, "-m", "litevae_cli", *args]
    harness.log(" ".join(cmd[2:]))
    subprocess.run(cmd, check=True)


def stages(out: Path, steps: dict, every: int) -> None:
    teacher_run, teacher = out / "teacher", out / "teacher-vae"
    litevae("pretrain", "--preset", "demo", "--data", "sample", "--out", str(teacher_run),
            "--steps", str(steps["teacher"]), *sum((["--set", s] for s in TEACHER_MODEL), []))
    if not (out / "teacher-latents" / "stats.json").is_file():
        litevae("encode-dataset", str(teacher_run), "--data", "sample", "--resolution", "256",
                "--out", str(out / "teacher-latents"), "--overwrite")
    if not (teacher / "config.json").is_file():
        litevae("export", str(teacher_run), str(teacher), "--format", "diffusers",
                "--stats", str(out / "teacher-latents" / "stats.json"))
    sets = sum((["--set", s] for s in DEMO_SIZE + ["optim.lr=3e-4", f"log.checkpoint_every={every}",
                                                   f"log.sample_every={every}"]), [])
    for student in ("litevae-s", "litevae-b"):
        litevae("distill", "--teacher", str(teacher), "--student", student, "--data", "sample",
                "--out", str(out / f"distill-{student}"), "--steps", str(steps[student]), *sets)
    litevae("finetune", "--preset", "sd-decoder-ft", "--from", str(teacher), "--data", "sample",
            "--out", str(out / "decoder-ft"), "--steps", str(steps["decoder_ft"]), *sets)


def holdout_batch(out: Path, resolution: int) -> tuple[list[str], torch.Tensor]:
    from litevae_cli.data.loaders import make_eval_loader

    names = write_holdout(out / "holdout")
    batch = next(iter(make_eval_loader(str(out / "holdout"), resolution, batch_size=len(names))))
    return [Path(k).stem for k in batch["keys"]] if "keys" in batch else names, batch["images"]


@torch.no_grad()
def measure(teacher, student, x: torch.Tensor) -> dict:
    """Latent agreement and image quality of student-encode -> teacher-decode (module docstring)."""
    from litevae_cli.metrics.image import psnr_uint8, ssim, to_uint8

    mu_t, mu_s = teacher.encode(x).mean, student.encode(x).mean
    value_range = float(mu_t.max() - mu_t.min())
    latent_psnr = 10 * torch.log10(value_range ** 2 / (mu_s - mu_t).square().mean())
    flat_t, flat_s = (m.transpose(0, 1).reshape(m.shape[1], -1) for m in (mu_t, mu_s))
    corr = [float(torch.corrcoef(torch.stack([a, b]))[0, 1]) for a, b in zip(flat_t, flat_s)]
    rec_t = teacher.decode(mu_t).clamp(-1, 1)
    rec_s = teacher.decode(mu_s).clamp(-1, 1)
    u = to_uint8
    return {"latent_psnr_db": float(latent_psnr), "latent_range": value_range, "channel_corr": corr,
            "psnr_vs_input": float(psnr_uint8(u(x), u(rec_s)).mean()),
            "teacher_psnr_vs_input": float(psnr_uint8(u(x), u(rec_t)).mean()),
            "psnr_vs_teacher_roundtrip": float(psnr_uint8(u(rec_t), u(rec_s)).mean()),
            "ssim_vs_input": float(ssim((x + 1) / 2, (rec_s + 1) / 2).mean()),
            "teacher_ssim_vs_input": float(ssim((x + 1) / 2, (rec_t + 1) / 2).mean())}


def curves(out: Path, teacher, x: torch.Tensor) -> dict:
    from litevae_cli.files.model_file import load_autoencoder

    result = {}
    for student in ("litevae-s", "litevae-b"):
        ckpts = sorted((out / f"distill-{student}" / "checkpoints").glob("step-*.pt"))
        rows = []
        for path in ckpts:
            loaded = load_autoencoder(path)  # EMA weights
            rows.append({"step": loaded.step, **measure(teacher, loaded.model, x)})
        result[student] = rows
    return result


def encoder_speed(students: dict, teacher, reps: int, batch: int) -> dict:
    from litevae_cli.models import create_model

    x = harness.images(batch, 256)
    sd_full = create_model("sd-vae-encoder", nz=4).eval()  # SD 1.x/2.x/SDXL encoder architecture
    fns = {name: (lambda m=m: m(x)) for name, m in {**students, "teacher": teacher.encoder,
                                                      "sd-vae-encoder-full": sd_full}.items()}
    with torch.no_grad():
        rates = harness.time_interleaved(fns, reps=reps, warmup=1, items=float(batch))
    return {"batch": batch, "img_per_s": {k: harness.stats(v) for k, v in rates.items()},
            "ratios": {f"{s}/{t}": harness.pair_ratio(rates[s], rates[t])
                       for s in students for t in ("teacher", "sd-vae-encoder-full")}}


def decoder_ft(out: Path, teacher, x: torch.Tensor) -> dict:
    from litevae_cli.files.model_file import load_autoencoder
    from litevae_cli.metrics.image import psnr_uint8, to_uint8

    after = load_autoencoder(out / "decoder-ft").model
    same = all(torch.equal(v, after.encoder.state_dict()[k]) for k, v in teacher.encoder.state_dict().items())
    with torch.no_grad():
        z = teacher.encode(x).mean
        latents_equal = torch.equal(z, after.encode(x).mean)
        before_psnr = psnr_uint8(to_uint8(x), to_uint8(teacher.decode(z).clamp(-1, 1))).mean()
        after_psnr = psnr_uint8(to_uint8(x), to_uint8(after.decode(z).clamp(-1, 1))).mean()
    return {"psnr_before": float(before_psnr), "psnr_after": float(after_psnr),
            "encoder_bit_identical": same, "latents_bit_identical": latents_equal}


def report(doc: dict) -> str:
    lines = [f"Machine: {doc['machine']['cpu']}, {doc['machine']['threads']} threads, flags "
             f"{doc['machine'].get('cpu_flags')}, torch {doc['machine']['torch']}. Held-out photos: "
             f"{', '.join(doc['holdout'])} at 256 px (center crop), EMA weights, posterior means.", "",
             "| student | steps | latent PSNR dB | mean channel corr | PSNR vs input | teacher's own | "
             "gap dB | SSIM vs input | teacher's SSIM | PSNR vs teacher round trip |", "|---" * 10 + "|"]
    for student, rows in doc["curves"].items():
        r = rows[-1]
        corr = sum(r["channel_corr"]) / len(r["channel_corr"])
        lines.append(f"| {student} | {r['step']} | {r['latent_psnr_db']:.2f} | {corr:.4f} | {r['psnr_vs_input']:.2f} | "
                     f"{r['teacher_psnr_vs_input']:.2f} | {r['psnr_vs_input'] - r['teacher_psnr_vs_input']:+.2f} | "
                     f"{r['ssim_vs_input']:.3f} | {r['teacher_ssim_vs_input']:.3f} | "
                     f"{r['psnr_vs_teacher_roundtrip']:.2f} |")
    lines += ["", "Curves (held-out, every checkpoint):", "",
              "| student | step | latent PSNR dB | PSNR vs input | gap to teacher dB |", "|---" * 5 + "|"]
    for student, rows in doc["curves"].items():
        for r in rows:
            lines.append(f"| {student} | {r['step']} | {r['latent_psnr_db']:.2f} | {r['psnr_vs_input']:.2f} | "
                         f"{r['psnr_vs_input'] - r['teacher_psnr_vs_input']:+.2f} |")
    sp = doc["speed"]
    lines += ["", f"Encoder speed at 256 px, batch {sp['batch']}, fp32, img/s (median of interleaved repeats):", "",
              "| encoder | img/s |", "|---|---|"]
    lines += [f"| {k} | {v['median']:.2f} |" for k, v in sp["img_per_s"].items()]
    lines += ["", "| ratio | median | min | max |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['median']:.2f}x | {v['min']:.2f}x | {v['max']:.2f}x |" for k, v in sp["ratios"].items()]
    d = doc["decoder_ft"]
    lines += ["", f"Decoder-only finetune of the teacher ({doc['steps']['decoder_ft']} steps, sd-decoder-ft at demo "
              f"size): held-out PSNR {d['psnr_before']:.2f} -> {d['psnr_after']:.2f} dB; encoder bit-identical: "
              f"{d['encoder_bit_identical']}; latents bit-identical: {d['latents_bit_identical']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench-results/distill"))
    p.add_argument("--quick", action="store_true", help="toy step counts: checks that every stage runs")
    p.add_argument("--every", type=int, default=100, help="checkpoint (curve point) interval of the distill runs")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch", type=int, default=4, help="images per encoder call in the speed section")
    p.add_argument("--speed-only", action="store_true",
                   help="remeasure only the encoder speeds of finished runs (on a quiet machine) into the results")
    a = p.parse_args()
    steps = ({"teacher": 900, "litevae-s": 600, "litevae-b": 400, "decoder_ft": 300} if not a.quick else
             {"teacher": 4, "litevae-s": 4, "litevae-b": 2, "decoder_ft": 2})
    every = a.every if not a.quick else 2
    started = time.time()
    if not a.speed_only:
        stages(a.out, steps, every)
    harness.setup_threads(2)
    from litevae_cli.files.model_file import load_autoencoder

    teacher = load_autoencoder(a.out / "teacher-vae").model  # the exported AutoencoderKL folder, read back
    students = {s: load_autoencoder(a.out / f"distill-{s}").model.encoder.eval() for s in ("litevae-s", "litevae-b")}
    speed = encoder_speed(students, teacher, 2 if a.quick else a.reps, 1 if a.quick else a.batch)
    if a.speed_only:
        doc = json.loads((a.out / "results.json").read_text())
        doc["speed"], doc["machine"] = speed, harness.machine_info(2)
    else:
        names, x = holdout_batch(a.out, 256)
        doc = {"steps": steps, "holdout": names, "curves": curves(a.out, teacher, x), "speed": speed,
               "decoder_ft": decoder_ft(a.out, teacher, x), "minutes": (time.time() - started) / 60,
               "machine": harness.machine_info(2)}
    harness.write_json(a.out / "results.json", doc)
    (a.out / "results.md").write_text(report(json.loads((a.out / "results.json").read_text())))
    print((a.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
