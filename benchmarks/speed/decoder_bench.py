"""Decoder throughput (issue 7 item 5): the SMC decoder against GroupNorm+conv decoders, 256 px output.

Contenders, interleaved per repeat on the same latent [B, 4, 32, 32] (nz=4 for all three):
- smc-decoder: ours, every GroupNorm+conv pair replaced by a self-modulated conv (53.30 M params);
- sd-vae-decoder: ours, the plain SD-VAE decoder (GroupNorm, mid attention, 49.49 M);
- sd-vae decoder (diffusers): `AutoencoderKL.decode` (post-quant conv + decoder), SD 1.x config,
  random init, the reference implementation of the same network as sd-vae-decoder.
Ratios are smc-decoder over each other contender, pair by pair. Under torch.inference_mode().
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import (autocast, base_parser, diffusers_sd_vae, log, memory_format, pair_ratio, peer_available,
                     setup_threads, stats, time_interleaved, write_json)

NZ = 4
OURS = ("smc-decoder", "sd-vae-decoder")
PEER = "sd-vae decoder (diffusers)"


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--layouts", nargs="+", default=["CL"])
    args = p.parse_args()
    setup_threads(args.threads)
    from litevae_cli import create_model
    from litevae_cli.models.complexity import model_complexity

    base = {}
    for name in OURS:
        torch.manual_seed(0)
        base[name] = create_model(name, nz=NZ).eval()
    notes = {}
    if (why := peer_available()) is None:
        vae = diffusers_sd_vae()
        vae.encoder = None
        base[PEER] = vae
    else:
        notes[PEER] = f"not measured: {why}"
    gflop = {n: model_complexity(n, 256, nz=NZ)["gflops_256"] for n in OURS}
    gflop[PEER] = gflop["sd-vae-decoder"]
    z = torch.randn(args.batch, NZ, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    for precision in args.precisions:
        for layout in args.layouts:
            fns = {}
            for name, m in base.items():
                m = copy.deepcopy(m).to(memory_format=memory_format(layout))
                zz = z.contiguous(memory_format=memory_format(layout))
                fns[name] = (lambda m=m, zz=zz: m.decode(zz).sample) if name == PEER else (lambda m=m, zz=zz: m(zz))
            log(f"decoder batch {args.batch} {precision} {layout}: {', '.join(fns)} "
                f"({args.warmup} warm-up + {args.reps} timed each)")
            with torch.inference_mode(), autocast(precision):
                rates = time_interleaved(fns, args.reps, args.warmup, float(args.batch))
            for name, vals in rates.items():
                rows.append({"model": name, "precision": precision, "layout": layout, "batch": args.batch,
                             "img_s": stats(vals), "gflop_per_img": gflop[name],
                             "smc_over_this": pair_ratio(rates["smc-decoder"], vals)})
    write_json(args.json, {"section": "decoder", "nz": NZ, "rows": rows, "notes": notes})


if __name__ == "__main__":
    main()
