"""Markdown tables from the JSON files that benchmarks/tuning/curves.py writes.

    python benchmarks/tuning/curves_table.py bench-results/kl-sweep            # one row per arm (final figures)
    python benchmarks/tuning/curves_table.py bench-results/demo-curve --curve  # every evaluated checkpoint
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def arms_table(runs: list[dict]) -> list[str]:
    lines = ["| arm | overrides | train min | PSNR dB | SSIM | KL nats/elem | posterior std | MMD^2 (sum) | other photos PSNR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        f = run["final"]
        extra = (f.get("extra") or {}).get("psnr")
        lines.append(f"| {f['arm']} | {' '.join(f['sets']) or '-'} | {f['train_minutes']:.2f} | {f['psnr']:.2f} | "
                     f"{f['ssim']:.3f} | {fmt(f.get('kl_nats_per_element'), '.3f')} | "
                     f"{fmt(f.get('posterior_std'), '.3f')} | {fmt(f.get('mmd2_sum'), '.3f')} | {fmt(extra, '.2f')} |")
    return lines


def curve_table(runs: list[dict]) -> list[str]:
    lines = ["| arm | phase | step | minutes | PSNR dB | SSIM |", "|---|---|---|---|---|---|"]
    for run in runs:
        for r in run["rows"]:
            lines.append(f"| {run['final']['arm']} | {r['phase']} | {r['step']} | {r['minutes']:.2f} | "
                         f"{r['psnr']:.2f} | {r['ssim']:.3f} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--curve", action="store_true", help="one row per evaluated checkpoint")
    args = p.parse_args()
    runs = [json.loads(f.read_text()) for f in sorted(args.folder.glob("*.json"))]
    if not runs:
        raise SystemExit(f"no curves.py results in {args.folder}")
    print("\n".join(curve_table(runs) if args.curve else arms_table(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
