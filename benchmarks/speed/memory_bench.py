"""Peak memory of one encoder forward (issue 7 item 3): batch 16 at 256, one configuration per process.

`run.py` starts this script once per (model, precision, layout), so no other model's buffers or
allocator history are in the figure. In the child: build the model and the input, then reset the
kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0) and run one forward under
torch.inference_mode(); the figure is VmHWM (peak RSS) minus the RSS just before the forward, i.e. the
activations and temporaries of the forward (weights and input are in the baseline). Where the reset is
unavailable, ru_maxrss minus the baseline is used and the row says so. On CUDA the figure would be
torch.cuda.max_memory_allocated; no GPU was available for this project's runs.

    .venv/bin/python benchmarks/speed/memory_bench.py --model litevae-b --precision bf16 --layout CL --json m.json
"""

from __future__ import annotations

import gc
import resource
import sys
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import autocast, base_parser, images, log, memory_format, setup_threads, write_json

PEER = "sd-vae (diffusers)"


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--layout", default="NCHW", choices=["NCHW", "CL"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=256)
    args = p.parse_args()
    setup_threads(args.threads)
    torch.manual_seed(0)
    if args.model == PEER:
        from harness import diffusers_sd_vae

        model = diffusers_sd_vae()
        model.decoder = None
        fn = lambda x: model.encode(x).latent_dist  # noqa: E731
    else:
        from litevae_cli import create_model

        model = create_model(args.model, nz=4).eval()
        fn = model
    model = model.to(memory_format=memory_format(args.layout))
    x = images(args.batch, args.resolution, args.layout)
    gc.collect()
    proc = psutil.Process()
    base = proc.memory_info().rss
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    method = "VmHWM after clear_refs" if reset_peak() else "ru_maxrss (peak reset unavailable)"
    with torch.inference_mode(), autocast(args.precision):
        out = fn(x)
        del out
    hwm = _status_kib("VmHWM")
    peak = hwm * 1024 if (hwm is not None and method.startswith("VmHWM")) else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {"model": args.model, "precision": args.precision, "layout": args.layout, "batch": args.batch,
           "resolution": args.resolution, "baseline_rss_mb": base / 2**20, "peak_rss_mb": peak / 2**20,
           "forward_peak_mb": (peak - base) / 2**20, "method": method,
           "ru_maxrss_before_mb": ru_before / 2**20}
    log(f"memory {args.model} {args.precision} {args.layout}: +{row['forward_peak_mb']:.0f} MiB over "
        f"{row['baseline_rss_mb']:.0f} MiB ({method})")
    write_json(args.json, {"section": "memory", "rows": [row]})


if __name__ == "__main__":
    main()
