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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import phase_plan  # noqa: E402


def litevae(*args: str) -> None:
    """Run a `litevae` subcommand in this process (the CLI app, exactly as the console script)."""
    from litevae_cli.cli import app

    print("litevae " + " ".join(args), flush=True)
    code = app(list(args), standalone_mode=False)
    if code:
        raise SystemExit(f"litevae {args[0]} exited with {code}")


def phase_args(job: dict, phase: dict, out: Path) -> list[str]:
    """The `litevae pretrain|finetune` arguments of one phase (`recipe.phase_plan`, which the fingerprint
    resolves too)."""
    args = [phase["command"], "--preset", phase["preset"], "--data", job["data"], "--out", str(out),
            *[a for s in phase["sets"] for a in ("--set", s)]]
    args += [a for flag, v in phase["flags"].items() if v is not None for a in (flag, str(v))]
    for flag in ("device", "weights_dir"):
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
    """Phase A then (if the arm has one) phase B, each resumed if interrupted; numbered checkpoints pruned."""
    run, times, init = Path(job["run_dir"]), {}, None
    for phase in phase_plan(job):
        t0 = time.time()
        extra = ["--from", str(init)] if init is not None else []
        litevae(*phase_args(job, phase, run / phase["command"]), *extra)
        times[f"{phase['command']}_s"] = round(time.time() - t0, 1)
        init = run / phase["command"] / "checkpoints" / "last.pt"
    for numbered in run.glob("*/checkpoints/step-*.pt"):  # only needed to resume a phase: tens of MB each
        numbered.unlink()
    return {"pretrain_res": job["pretrain_res"], "pretrain_steps": job["pretrain_steps"],
            "finetune_res": job["finetune_res"], "finetune_steps": job["finetune_steps"],
            "pretrain_s": times.get("pretrain_s", 0.0), "finetune_s": times.get("finetune_s", 0.0)}


def final_checkpoint(job: dict) -> Path:
    return Path(job["run_dir"]) / ("finetune" if job["finetune_steps"] else "pretrain") / "checkpoints" / "last.pt"


def per_image_psnr(model, holdout: str, resolution: int, limit: int | None) -> dict:
    """Per-image PSNR with `litevae eval`'s own protocol (same loader, crop, posterior mean, uint8 quantisation
    and `psnr_uint8`), keyed by image, for the paired analysis (`litevae eval` reports only the mean)."""
    import torch

    from litevae_cli import runtime
    from litevae_cli.data.loaders import make_eval_loader
    from litevae_cli.metrics.evaluate import reconstruct_uint8
    from litevae_cli.metrics.image import psnr_uint8

    names, values = [], []
    with runtime.open("cpu", "fp32", distributed=False) as rt, torch.no_grad():
        for batch in make_eval_loader(holdout, resolution, 4, limit=limit):
            if batch["images"].shape[0]:
                values += psnr_uint8(*reconstruct_uint8(model, batch["images"], rt)).tolist()
                names += [str(m["key"]) for m in batch["meta"]]
    return {"names": names, "psnr": values}


def latent_vectors(model, holdout: str, resolution: int, crops: int, seed: int, dest: Path,
                   limit: int | None = None) -> dict:
    """Posterior means and one posterior sample at every latent position of `crops` random crops per held-out
    photo at `resolution` (the photo's shorter side resized to 2x that first), the same crops for every arm
    and seed (fixed RNG); saved as [crops, positions, nz] arrays for the report's MMD (P Table 6)."""
    import numpy as np
    import torch

    from litevae_cli.data.loaders import make_eval_loader

    gen = torch.Generator().manual_seed(1234)
    means, samples = [], []
    with torch.no_grad():
        for batch in make_eval_loader(holdout, 2 * resolution, 1, limit=limit):
            corners = torch.randint(0, resolution + 1, (crops, 2), generator=gen).tolist()
            x = torch.cat([batch["images"][:, :, y:y + resolution, x:x + resolution] for y, x in corners])
            post = model.encode(x)  # the crops of one photo in one batch
            z = post.sample(torch.Generator().manual_seed(seed * 100_003 + len(means)))
            means += list(post.mean.flatten(2).transpose(1, 2).numpy())
            samples += list(z.flatten(2).transpose(1, 2).numpy())
    np.savez_compressed(dest, mean=np.stack(means).astype(np.float32), sample=np.stack(samples).astype(np.float32))
    return {"latents_file": str(dest), "latent_crops": len(means), "latent_positions": int(means[0].shape[0])}


def measure_arm(job: dict) -> dict:
    """The scale's metrics (`litevae eval`) and per-image PSNR at every eval resolution, the latent vectors
    (encoder arms) and the decoder's activation ratio of the final checkpoint."""
    from litevae_cli.files.model_file import load_autoencoder

    run, t0 = Path(job["run_dir"]), time.time()
    ckpt = final_checkpoint(job)
    limit = job.get("eval_limit")
    flags = (["--limit", str(limit)] if limit else []) + (["--device", job["device"]] if job.get("device") else [])
    flags += ["--weights-dir", job["weights_dir"]] if job.get("weights_dir") else []
    res_list = ",".join(str(r) for r in job["eval_res"])
    litevae("eval", str(ckpt), "--data", job["holdout"], "--metrics", ",".join(job["metrics"]), "--resolution",
            res_list, "--json", str(run / "eval.json"), *flags)
    rows = json.loads((run / "eval.json").read_text())["results"]
    result: dict = {"eval": {str(r["resolution"]): {k: r[k] for k in job["metrics"] if k in r} | {"images": r["images"]}
                             for r in rows}}
    model = load_autoencoder(ckpt).model.eval()
    result["per_image"] = {str(res): per_image_psnr(model, job["holdout"], res, limit) for res in job["eval_res"]}
    first = str(job["eval_res"][0])  # the training resolution: the verdicts' row
    result.update(psnr=result["eval"][first].get("psnr"), ssim=result["eval"][first].get("ssim"),
                  images=result["eval"][first]["images"])
    if job["latents"]:
        result.update(latent_vectors(model, job["holdout"], job["eval_res"][0], job["latent_crops"], job["seed"],
                                     run / "latents.npz", limit))
    result["activation_ratio"] = decoder_activation_ratio(ckpt, job["holdout"], job["eval_res"][0], 8)
    result["eval_s"] = round(time.time() - t0, 1)
    return result


def run_job(job: dict) -> dict:
    """Train and measure; with `remeasure`, measure again and keep the training record of the last result."""
    previous = Path(job["result"])
    if job.get("remeasure") and previous.exists():
        trained = {k: v for k, v in json.loads(previous.read_text()).items()
                   if k in ("pretrain_res", "pretrain_steps", "finetune_res", "finetune_steps", "pretrain_s",
                            "finetune_s")}
    else:
        trained = train_arm(job)
    return {"arm": job["arm"], "seed": job["seed"], "fingerprint": job.get("fingerprint"), **trained,
            **measure_arm(job)}


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
        result["fingerprint"] = job.get("fingerprint")  # every results file says which recipe made it
        dest = Path(job["result"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(dest)  # atomic: a result file exists only for a finished job
    return 0


if __name__ == "__main__":
    raise SystemExit(main_jobs([Path(a) for a in sys.argv[1:]]))
