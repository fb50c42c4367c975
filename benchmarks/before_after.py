"""Effect of the issue-7 model optimisations: the model code of an older revision against the working tree.

The older revision's `litevae_cli` is extracted with `git archive` into a temporary folder and renamed
`litevae_old` (imports rewritten), so both versions live in ONE process and are timed interleaved, on
the same input, with the same weights (the new model's state_dict is loaded into the old one: the
optimisations keep every parameter name). Reported: litevae-b encoder img/s (batch 16), smc-decoder
img/s (batch 1), 3-level Haar DWT img/s (16x3x256x256), each as new/old pair by pair, plus the largest
output difference. Peak memory (one process per version) is measured with `--memory`.

    .venv/bin/python benchmarks/before_after.py --old-rev 9e244c2 --json out.json
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from harness import (autocast, base_parser, images, log, memory_format, pair_ratio, setup_threads, stats,
                     time_interleaved, write_json)

ROOT = Path(__file__).resolve().parent.parent


def extract_old(rev: str, dest: Path) -> None:
    """`git archive REV litevae_cli` -> dest/litevae_old with every `litevae_cli` import renamed."""
    blob = subprocess.run(["git", "archive", "--format=tar", rev, "litevae_cli"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "litevae_cli").rename(dest / "litevae_old")
    for py in (dest / "litevae_old").rglob("*.py"):
        py.write_text(py.read_text().replace("litevae_cli", "litevae_old"))


def peak_memory_child(package: str, precision: str, layout: str) -> float:
    """Forward peak RSS (MiB) of litevae-b at batch 16 in a fresh process importing `package`."""
    code = (
        "import sys, gc, psutil, torch; from pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from harness import autocast, images, memory_format, setup_threads\n"
        f"setup_threads(2); m = __import__({package!r}).create_model('litevae-b', nz=4).eval()"
        f".to(memory_format=memory_format({layout!r})); x = images(16, 256, {layout!r}); gc.collect()\n"
        "base = psutil.Process().memory_info().rss; Path('/proc/self/clear_refs').write_text('5')\n"
        f"with torch.inference_mode(), autocast({precision!r}): m(x)\n"
        "hwm = [int(l.split()[1]) for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0]\n"
        "print((hwm * 1024 - base) / 2**20)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(sys.path[0])})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--old-rev", default="9e244c2", help="revision before the optimisations")
    p.add_argument("--memory", action="store_true", help="also peak memory, one process per version")
    args = p.parse_args()
    setup_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="litevae-old-"))
    extract_old(args.old_rev, tmp)
    sys.path.insert(0, str(tmp))
    old_pkg = importlib.import_module("litevae_old")
    import litevae_cli
    from litevae_cli.models.wavelets import wavedec2 as new_dwt

    old_dwt = importlib.import_module("litevae_old.models.wavelets").wavedec2
    rows = []

    def compare(label, new_fn, old_fn, items, reps, warmup, diff):
        log(f"{label}: new vs old ({warmup} warm-up + {reps} timed each)")
        rates = time_interleaved({"new": new_fn, "old": old_fn}, reps, warmup, items)
        rows.append({"what": label, "new": stats(rates["new"]), "old": stats(rates["old"]),
                     "new_over_old": pair_ratio(rates["new"], rates["old"]), "max_abs_diff": diff})

    with torch.inference_mode():
        x = images(16, 256)
        diff = max((a - b).abs().max().item() for a, b in zip(new_dwt(x, 3), old_dwt(x, 3)))
        compare("DWT 16x3x256x256 (img/s)", lambda: new_dwt(x, 3), lambda: old_dwt(x, 3), 16.0,
                max(20, args.reps), 10, diff)
        for name, batch, shape in (("litevae-b", 16, None), ("smc-decoder", 1, (1, 4, 32, 32))):
            torch.manual_seed(0)
            new = litevae_cli.create_model(name, nz=4).eval()
            old = old_pkg.create_model(name, nz=4).eval()
            old.load_state_dict(new.state_dict())
            for precision in ("fp32", "bf16"):
                layout = "CL"
                new_m, old_m = (m.to(memory_format=memory_format(layout)) for m in (new, old))
                inp = images(batch, 256, layout) if shape is None else \
                    torch.randn(*shape).contiguous(memory_format=memory_format(layout))
                with autocast(precision):
                    out_new, out_old = new_m(inp), old_m(inp)
                    if hasattr(out_new, "moments"):
                        out_new, out_old = out_new.moments, out_old.moments
                    d = (out_new.float() - out_old.float()).abs().max().item()
                    compare(f"{name} batch {batch} {precision} {layout} (img/s)", lambda: new_m(inp),
                            lambda: old_m(inp), float(batch), args.reps, args.warmup, d)
    if args.memory:
        for precision in ("fp32", "bf16"):
            new_mb, old_mb = (peak_memory_child(pkg, precision, "CL") for pkg in ("litevae_cli", "litevae_old"))
            rows.append({"what": f"litevae-b batch 16 {precision} CL forward peak (MiB)", "new_mib": new_mb,
                         "old_mib": old_mb, "new_over_old_mem": new_mb / old_mb})
    write_json(args.json, {"section": "before_after", "old_rev": args.old_rev, "rows": rows})


if __name__ == "__main__":
    main()
