"""One job of `benchmarks/reproduce/reproduce.py`: an arm and seed trained and measured, or the encoders' img/s.

Run by the driver in its own process, pinned to one core with one thread (CPU) or given one GPU:
    python benchmarks/reproduce/reproduce_worker.py OUT/jobs/base-s0.json [more job files, run in turn]
Every `litevae` command runs in this process through the CLI app, exactly as the console script would
(so torch is imported once per worker, not once per command). A job's result file is written atomically
at its end, so the driver treats a job as done only when that file exists.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def litevae(*args: str) -> None:
    """Run a `litevae` subcommand in this process (the CLI app, exactly as the console script)."""
    from litevae_cli.cli import app

    print("litevae " + " ".join(args), flush=True)
    code = app(list(args), standalone_mode=False)
    if code:
        raise SystemExit(f"litevae {args[0]} exited with {code}")


def phase_args(job: dict, command: str, preset: str, res: int, steps: int, out: Path) -> list[str]:
    every = max(1, min(steps // 8, 1000))  # a status line per 1/8 of a short run, per 1000 steps of a long one
    sets = [*job["sets"], f"data.resolution={res}", f"train.seed={job['seed']}", f"log.every={every}",
            f"log.sample_every={steps}", f"log.checkpoint_every={max(1, min(steps // 4, 5000))}"]
    args = [command, "--preset", preset, "--data", job["data"], "--out", str(out), "--steps", str(steps),
            *[a for s in sets for a in ("--set", s)]]
    for flag in ("batch_size", "device", "weights_dir"):
        if job.get(flag) is not None:
            args += [f"--{flag.replace('_', '-')}", str(job[flag])]
    return args


def decoder_activation_ratio(ckpt: Path, holdout: str, resolution: int, limit: int | None) -> dict:
    """max |h| / mean |h| of each decoder block's output on the held-out photos (the feature-map imbalance
    GroupNorm causes, P Sec. 4.2 / Fig. 3): per block, then the max and the mean over blocks."""
    import torch

    from litevae_cli.files.model_file import load_autoencoder
    from litevae_cli.data.loaders import make_eval_loader

    model = load_autoencoder(ckpt).model
    decoder = model.decoder
    blocks = [(f"mid.{i}", m) for i, m in enumerate(decoder.mid)] + [(f"up.{i}", m) for i, m in enumerate(decoder.up)]
    peak, total, count = {}, {}, {}

    def hook(name):
        def record(_module, _inputs, out):
            a = out.detach().abs().double()
            peak[name] = max(peak.get(name, 0.0), float(a.max()))
            total[name] = total.get(name, 0.0) + float(a.sum())
            count[name] = count.get(name, 0) + a.numel()
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in blocks]
    with torch.no_grad():
        for batch in make_eval_loader(holdout, resolution, 4, limit=limit):
            model.decode(model.encode(batch["images"]).mean)
    for h in handles:
        h.remove()
    ratios = {n: peak[n] / (total[n] / count[n]) for n, _ in blocks}
    return {"max": max(ratios.values()), "mean": sum(ratios.values()) / len(ratios), "per_block": ratios}


def train_arm(job: dict) -> dict:
    """Phase A then phase B (resumed if interrupted); numbered checkpoints pruned, last.pt kept."""
    run = Path(job["run_dir"])
    pre_res = job["finetune_res"] if job["full_res_pretrain"] else job["pretrain_res"]
    t0 = time.time()
    litevae(*phase_args(job, "pretrain", job["pretrain_preset"], pre_res, job["pretrain_steps"], run / "pretrain"))
    t1 = time.time()
    litevae(*phase_args(job, "finetune", job["finetune_preset"], job["finetune_res"], job["finetune_steps"],
                        run / "finetune"), "--from", str(run / "pretrain" / "checkpoints" / "last.pt"))
    t2 = time.time()
    for numbered in run.glob("*/checkpoints/step-*.pt"):  # only needed to resume a phase: tens of MB each
        numbered.unlink()
    return {"pretrain_res": pre_res, "pretrain_steps": job["pretrain_steps"], "finetune_steps": job["finetune_steps"],
            "pretrain_s": round(t1 - t0, 1), "finetune_s": round(t2 - t1, 1)}


def measure_arm(job: dict) -> dict:
    """Held-out PSNR/SSIM, MMD (encoder arms) and the decoder's activation ratio of the final checkpoint."""
    run, t0 = Path(job["run_dir"]), time.time()
    ckpt = run / "finetune" / "checkpoints" / "last.pt"
    limit = ["--limit", str(job["eval_limit"])] if job.get("eval_limit") else []
    device = ["--device", job["device"]] if job.get("device") else []
    litevae("eval", str(ckpt), "--data", job["holdout"], "--metrics", "psnr,ssim", "--resolution",
            str(job["eval_res"]), "--json", str(run / "eval.json"), *limit, *device)
    ev = json.loads((run / "eval.json").read_text())["results"][0]
    result = {"psnr": ev["psnr"], "ssim": ev["ssim"], "images": ev["images"]}
    if job["latents"]:
        litevae("inspect-latents", str(ckpt), "--data", job["holdout"], "--resolution", str(job["eval_res"]),
                "--out", str(run / "latents"), "--json", str(run / "latents.json"), *limit, *device)
        lat = json.loads((run / "latents.json").read_text())
        result["mmd2"] = lat["mmd2_to_standard_normal"]["raw"]
        # The same after each channel is standardised: what is left when the latents' scale is factored out.
        result["mmd2_normalised"] = lat["mmd2_to_standard_normal"]["normalised"]
        result["mmd_images"] = lat["mmd2_to_standard_normal"]["samples"]
        result["latent_std"] = lat["posterior_mean"]["global_std"]
    result["activation_ratio"] = decoder_activation_ratio(ckpt, job["holdout"], job["eval_res"], 8)
    result["eval_s"] = round(time.time() - t0, 1)
    return result


def run_job(job: dict) -> dict:
    """Train and measure; with `remeasure`, measure again and keep the training record of the last result."""
    previous = Path(job["result"])
    if job.get("remeasure") and previous.exists():
        trained = {k: v for k, v in json.loads(previous.read_text()).items()
                   if k in ("pretrain_res", "pretrain_steps", "finetune_steps", "pretrain_s", "finetune_s")}
    else:
        trained = train_arm(job)
    return {"arm": job["arm"], "seed": job["seed"], **trained, **measure_arm(job)}


def encoder_throughput(job: dict) -> dict:
    """img/s of the two encoders, measured in this one process, rounds interleaved so load hits both alike."""
    import torch

    from litevae_cli.models import create_model
    from litevae_cli.models.complexity import model_complexity

    device = torch.device(job.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    res, batch = job["eval_res"], job["batch"]
    encoders = {"litevae": (job["litevae_encoder"], job["litevae_kwargs"]),
                "sd-vae": ("sd-vae-encoder", job["sd_kwargs"])}
    out: dict = {"resolution": res, "batch": batch, "device": str(device), "threads": torch.get_num_threads()}
    nets = {}
    for key, (name, kw) in encoders.items():
        torch.manual_seed(0)
        nets[key] = create_model(name, nz=job["nz"], **kw).to(device).eval()
        c = model_complexity(name, res, nz=job["nz"], **kw)
        c64 = model_complexity(name, job["train_res"], nz=job["nz"], **kw)
        out[key] = {"name": name, "kwargs": kw, "params": c["params"], f"gflops_{res}": c[f"gflops_{res}"],
                    f"gflops_{job['train_res']}": c64[f"gflops_{job['train_res']}"], "seconds": []}
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        for net in nets.values():  # warm-up
            net(x)
        for _ in range(job["rounds"]):
            for key, net in nets.items():
                sync()
                t = time.perf_counter()
                net(x)
                sync()
                out[key]["seconds"].append(time.perf_counter() - t)
    for key in nets:
        s = sorted(out[key]["seconds"])
        out[key]["img_per_s"] = batch / s[len(s) // 2]
    return out



def main_jobs(paths: list[Path]) -> int:
    for path in paths:
        job = json.loads(path.read_text())
        result = run_job(job) if job["kind"] == "arm" else encoder_throughput(job)
        dest = Path(job["result"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(dest)  # atomic: a result file exists only for a finished job
    return 0


if __name__ == "__main__":
    raise SystemExit(main_jobs([Path(a) for a in sys.argv[1:]]))
