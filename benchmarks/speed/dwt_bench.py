"""DWT throughput (issue 7 item 4): 3-level Haar DWT of a 16x3x256x256 float32 batch.

Contenders, interleaved per repeat on the same tensor:
- ours: `litevae_cli.models.wavelets.wavedec2(x, 3, "haar")` (periodization, identical to pywt's
  default mode for haar; the Haar butterfly form of the per-level stride-2 depthwise conv);
- pywt: `pywt.wavedec2(x.numpy(), "haar", level=3, axes=(-2, -1))` on the whole batch (single-threaded C);
- ptwt: `ptwt.wavedec2(x, "haar", level=3, mode="zero")` when it imports (a 2-tap filter needs no
  padding on even sizes, so every mode gives the same coefficients; the error column checks it);
- torch depthwise conv: the spec's literal form (one grouped stride-2 conv per level with the 2x2 filter
  bank from pywt), i.e. what `wavedec2` ran before the butterfly, kept as the reference for that change.
Max abs error is taken against pywt over every band of every level.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pywt
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import base_parser, log, pair_ratio, setup_threads, stats, time_interleaved, write_json

SHAPE = (16, 3, 256, 256)
LEVELS = 3


def conv_wavedec2(x: torch.Tensor, levels: int = LEVELS) -> list[torch.Tensor]:
    """One grouped stride-2 conv per level (torch-dwt's form), packed [N, 4C, h, w] like `wavedec2`."""
    from litevae_cli.models.wavelets import _filters_2d

    bank = _filters_2d("haar")[0]
    weight = bank.repeat(x.shape[1], 1, 1, 1)
    out, approx = [], x
    for _ in range(levels):
        n, c, h, w = approx.shape
        y = F.conv2d(approx, weight, stride=2, groups=c)
        out.append(y)
        approx = y.view(n, c, 4, h // 2, w // 2)[:, :, 0]
    return out


def packed_to_pywt(levels: list[torch.Tensor]) -> list:
    """Our packed levels -> pywt's [cA_L, (cH_L, cV_L, cD_L), ..., (cH_1, cV_1, cD_1)] as numpy."""
    out = []
    for i, y in enumerate(reversed(levels)):
        n, c4, h, w = y.shape
        b = y.view(n, c4 // 4, 4, h, w).detach().numpy()
        if i == 0:
            out.append(b[:, :, 0])
        out.append((b[:, :, 1], b[:, :, 2], b[:, :, 3]))
    return out


def max_err(coeffs, ref) -> float:
    err = float(np.abs(np.asarray(coeffs[0]) - ref[0]).max())
    for got, want in zip(coeffs[1:], ref[1:]):
        err = max(err, *(float(np.abs(np.asarray(g) - r).max()) for g, r in zip(got, want)))
    return err


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(reps=20, warmup=3)
    args = p.parse_args()
    setup_threads(args.threads)
    from litevae_cli.models.wavelets import wavedec2

    x = (torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1).contiguous()
    xn = x.numpy()  # shares memory: no conversion inside the timed region
    fns = {"ours (wavedec2)": lambda: wavedec2(x, LEVELS, "haar"),
           "pywt": lambda: pywt.wavedec2(xn, "haar", level=LEVELS, axes=(-2, -1)),
           "torch depthwise conv": lambda: conv_wavedec2(x)}
    notes = {}
    try:
        import ptwt

        fns["ptwt"] = lambda: ptwt.wavedec2(x, "haar", level=LEVELS, mode="zero")
    except Exception as e:  # optional peer
        notes["ptwt"] = f"not measured: {type(e).__name__}: {e}"
    ref = pywt.wavedec2(xn, "haar", level=LEVELS, axes=(-2, -1))
    with torch.inference_mode():
        errors = {"ours (wavedec2)": max_err(packed_to_pywt(wavedec2(x, LEVELS)), ref),
                  "torch depthwise conv": max_err(packed_to_pywt(conv_wavedec2(x)), ref), "pywt": 0.0}
        if "ptwt" in fns:
            got = fns["ptwt"]()
            errors["ptwt"] = max_err([got[0].numpy()] + [tuple(t.numpy() for t in lvl) for lvl in got[1:]], ref)
        log(f"dwt {SHAPE}: {', '.join(fns)} ({args.warmup} warm-up + {args.reps} timed each)")
        rates = time_interleaved(fns, args.reps, args.warmup, float(SHAPE[0]))
    rows = [{"impl": k, "img_s": stats(v), "ratio_ours_over_this": pair_ratio(rates["ours (wavedec2)"], v),
             "max_abs_err_vs_pywt": errors[k]} for k, v in rates.items()]
    write_json(args.json, {"section": "dwt", "shape": SHAPE, "levels": LEVELS, "rows": rows, "notes": notes})


if __name__ == "__main__":
    main()
