"""OUT/gpu_bench.md from the results document of `gpu_bench.py`: one table per section, rewritten after each arm.

Every arm appears, measured or not: a row that did not measure says why (skipped: a missing optional
dependency or file; not run: the bench's budget was spent; timeout: its own cap; stopped: a signal; error).
"""

from __future__ import annotations


def _rate(r: dict) -> str:
    i = r.get("img_s")
    if not i:
        return "-"
    return f"{i['median']:,.1f} ({i['min']:,.1f}-{i['max']:,.1f}, n={i['n']})"


def _mib(v) -> str:
    return "n/a" if v is None else f"{v:,}"


def _status(r: dict) -> str:
    return "ok" if r["status"] == "ok" else f"**{r['status']}**: {r.get('why', '')}"


def _train_rows(rows: list[dict]) -> list[str]:
    out = ["| arm | px | precision (why) | img/s per GPU (median, min-max) | first call s | peak alloc MiB | LPIPS | "
           "status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        prec = r.get("precision", "-")
        if "precision_reason" in r:
            prec = f"{prec} ({r['precision_reason']})"
        extra = "" if r.get("channels_last_effective", r.get("channels_last")) == r.get("channels_last") else \
            " (layout NOT applied)"
        out.append(f"| {r['name']}{extra} | {r.get('resolution', '-')} | {prec} | {_rate(r)} | "
                   f"{r.get('first_call_s', '-')} | {_mib(r.get('peak_alloc_mib'))} | {r.get('lpips', '-')} | "
                   f"{_status(r)} |")
    return out


def markdown(doc: dict) -> str:
    m = doc["machine"]
    arms = doc["arms"]
    lines = []
    if doc["dry_run"]:
        lines += ["**DRY RUN on the CPU with tiny stand-in models, one call per arm: these figures mean nothing.**", ""]
    if doc.get("stopped"):
        lines += [f"**Stopped early ({doc['stopped']}): the arms below are what was measured before.**", ""]
    lines += [f"Machine: {m.get('gpu', m['device'])}, torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m.get('cudnn')}; "
              f"`python benchmarks/speed/gpu_bench.py` ({doc['date']}, budget {doc['budget_s']:.0f} s). "
              "img/s: median of the timed steps after warm-up (min-max, n steps); first call: the first warm-up "
              "call, which holds a compile.", ""]
    skips = [r for r in arms if r["status"] == "skipped"]
    if skips:
        lines += ["Skipped parts:", ""] + [f"- {r['section']} {r['name']}: {r['why']}" for r in skips] + [""]
    train = [r for r in arms if r["section"] in ("train-B", "train-A") and r["status"] != "skipped"]
    if train:
        lines += ["Train steps (`training.loop.train_step`, random images, LPIPS with random weights):", ""]
        lines += _train_rows(train) + [""]
    ddp = [r for r in arms if r["section"] == "ddp" and r["status"] != "skipped"]
    for r in ddp:
        lines += [f"1-rank DDP step ({r.get('backend', '?')}, NCCL {r.get('nccl_version')}): {_rate(r)} img/s, "
                  f"process group up in {r.get('init_s', '-')} s, all_reduce ok: {r.get('all_reduce_ok')}; "
                  f"{_status(r)}", ""]
    for r in (r for r in arms if r["section"] == "loader" and r["status"] != "skipped"):
        lines += [f"Loader ({r['name']}): {r.get('summary', '')} {_status(r)}", ""]
    enc = [r for r in arms if r["section"] == "encoders" and r["status"] != "skipped"]
    if enc:
        lines += ["Encoders, inference (nz 4, random init):", "",
                  "| model | px | batch | precision | layout | compiled | img/s (median, min-max) | first call s | "
                  "peak alloc MiB | status |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in enc:
            lines.append(f"| {r.get('model', r['name'])} | {r.get('resolution', '-')} | {r.get('batch', '-')} | "
                         f"{r.get('precision', '-')} | {r.get('layout', '-')} | {r.get('compiled', '-')} | {_rate(r)} | "
                         f"{r.get('first_call_s', '-')} | {_mib(r.get('peak_alloc_mib'))} | {_status(r)} |")
        for batch, best in (doc.get("encoder_best") or {}).items():
            parts = [f"{k}: {v['img_s']:,.1f} img/s ({v['precision']}, {v['layout']}, "
                     f"{'compiled' if v['compiled'] else 'eager'})" for k, v in best.items() if k != "ratio"]
            ratio = f" -> ratio **{best['ratio']:.2f}x**" if "ratio" in best else ""
            lines.append(f"\nBatch {batch}, each at its best: " + "; ".join(parts) + ratio)
        lines.append("")
    left = [r for r in arms if r["status"] in ("not run", "timeout", "stopped")]
    if left:
        lines += [f"Not measured: {len(left)} arm(s) (see the status column)."]
    return "\n".join(lines) + "\n"
