"""Host memory kept for reuse vs the system's malloc (`runtime.host_memory`) on the CPU: img/s, kernel time, page
faults and peak RSS of the encoders and of the phase-A train step, each workload in its own process per setting.

The setting is process-wide and cannot be undone, so the two arms cannot share a process: every (workload,
setting) is a child process (LITEVAE_HOST_MEMORY=system or =reuse in its environment; THP_MEM_ALLOC_ENABLE as
this process has it, else 1 as `run.py` sets it), and the children run in alternating order, --rounds times
(round r starts with the other setting from round r-1), so drift in the machine's speed hits both arms. A child
builds the workload, makes --warmup untimed calls, then --reps timed ones; per call it records img/s, minor page
faults and the process's user and system CPU seconds (getrusage), and at the end its peak RSS (ru_maxrss).
Ratios: reuse / system img/s per round (median over that round's calls), then min/median/max over rounds;
litevae-b / SD-VAE per setting and round likewise.

Workloads: the litevae-b and diffusers SD-VAE encoders (nz 4, 256 px, bf16 autocast, channels_last: both models'
best eager setting here, BENCHMARKS.md "GroupNorm under compile") at batch 16 and 1; the phase-A train step of
`b-pretrain` (litevae-b + smc-decoder, 128 px, batch 4, LPIPS VGG with a random backbone, `precision: auto`) through
`training.step.train_step`, built as `compiled_train.py` builds its eager arm.

    python benchmarks/speed/host_memory_bench.py --rounds 2 --json out.json
    python benchmarks/speed/host_memory_bench.py --quick      # litevae-tiny encoder only (plumbing)
    python benchmarks/speed/host_memory_bench.py --table out.json   # the markdown table of a result
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/harness.py
sys.path.insert(0, str(HERE))
from harness import base_parser, log, stats, write_json  # noqa: E402

SETTINGS = ("system", "reuse")
ENCODERS = {"litevae-b": "litevae-b", "sd-vae": "sd-vae (diffusers)"}
WORKLOADS = ("litevae-b b16", "sd-vae b16", "litevae-b b1", "sd-vae b1", "train-A b4")
QUICK_WORKLOADS = ("litevae-tiny b2",)


def build(workload: str):
    """(zero-arg callable, images per call) for a workload name "<model> b<batch>"."""
    import torch

    from harness import autocast, images

    name, batch = workload.split()[0], int(workload.split()[1][1:])
    if name == "train-A":
        from compiled_train import arm

        step, *_ = arm("A", batch, "auto", "random", quick=False, compiled=False, backend="inductor")
        return step, batch
    from compiled_encoders import Moments
    from encoder_bench import NZ, build_models

    if name == "litevae-tiny":
        from litevae_cli import create_model

        model, peer = create_model("litevae-tiny", nz=NZ).eval(), False
    else:
        model, peer = build_models([ENCODERS[name]])[ENCODERS[name]], name == "sd-vae"
    m = Moments(model.to(memory_format=torch.channels_last), peer).eval()
    x = images(batch, 64 if name == "litevae-tiny" else 256, "CL")

    def call():
        with torch.inference_mode(), autocast("bf16"):
            return m(x)
    return call, batch


def child(workload: str, reps: int, warmup: int, threads: int) -> dict:
    """One workload in this process, under the host-memory setting of its environment."""
    from harness import machine_info, setup_threads

    setup_threads(threads)
    fn, items = build(workload)
    for _ in range(warmup):
        fn()
    calls = []
    for _ in range(reps):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        calls.append({"img_s": items / wall, "minor_faults": r1.ru_minflt - r0.ru_minflt,
                      "system_cpu_share": system / max(user + system, 1e-9)})
    info = machine_info(threads)
    return {"workload": workload, "host_memory": info["host_memory"], "host_memory_reason": info["host_memory_reason"],
            "calls": calls, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "machine": info}


def run_child(workload: str, setting: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, __file__, "--child", workload, "--reps", str(args.reps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--json", str(out)]
        env = dict(os.environ, LITEVAE_HOST_MEMORY=setting)
        env.setdefault("THP_MEM_ALLOC_ENABLE", "1")
        subprocess.run(cmd, env=env, check=True, cwd=HERE.parents[1])
        return json.loads(out.read_text())


def median_of(row: dict, key: str) -> float:
    return stats([c[key] for c in row["calls"]])["median"]


def summarise(runs: list[dict], workloads: tuple[str, ...]) -> dict:
    """Per workload and setting: img/s over all calls, fault and kernel-time medians, peak RSS; the ratios."""
    out = {"rows": [], "reuse_over_system": {}, "litevae_over_sd": {}}
    for w in workloads:
        for s in SETTINGS:
            mine = [r for r in runs if r["workload"] == w and r["setting"] == s]
            calls = [c for r in mine for c in r["calls"]]
            out["rows"].append({"workload": w, "setting": s, "applied": mine[0]["host_memory"],
                                "img_s": stats([c["img_s"] for c in calls]),
                                "minor_faults_per_call": stats([c["minor_faults"] for c in calls])["median"],
                                "system_cpu_share": stats([c["system_cpu_share"] for c in calls])["median"],
                                "peak_rss_mib": stats([r["peak_rss_mib"] for r in mine])})
        per_round = [median_of(r, "img_s") / median_of(q, "img_s") for r in runs for q in runs
                     if r["workload"] == q["workload"] == w and r["round"] == q["round"]
                     and (r["setting"], q["setting"]) == ("reuse", "system")]
        out["reuse_over_system"][w] = stats(per_round)
    for batch in ("b16", "b1"):
        lite, sd = f"litevae-b {batch}", f"sd-vae {batch}"
        if lite in workloads and sd in workloads:
            for s in SETTINGS:
                per_round = [median_of(r, "img_s") / median_of(q, "img_s") for r in runs for q in runs
                             if (r["workload"], q["workload"]) == (lite, sd) and r["setting"] == q["setting"] == s
                             and r["round"] == q["round"]]
                out["litevae_over_sd"][f"{batch} {s}"] = stats(per_round)
    return out


def render_host_memory(doc: dict | None) -> list[str]:
    """Markdown for BENCHMARKS.md: one row per workload and setting, then the ratios."""
    from compiled_report import _table, fmt, machine_line

    if not doc or doc.get("failed"):
        return []
    rows = [[r["workload"], f"{r['setting']} ({r['applied']})", fmt(r["img_s"], 3), f"{r['minor_faults_per_call']:.0f}",
             f"{100 * r['system_cpu_share']:.1f}%", f"{r['peak_rss_mib']['median']:.0f}"] for r in doc["rows"]]
    lines = [f"Each (workload, setting) in its own process, {doc['rounds']} rounds in alternating order, "
             f"{doc['warmup']} warm-up + {doc['reps']} timed calls per process; img/s median (min-max) over all "
             f"timed calls. {machine_line(doc)}", "",
             *_table(["workload", "setting", "img/s", "page faults / call", "kernel share of CPU time",
                      "peak RSS MiB"], rows), ""]
    lines += [f"- {w}: reuse / system = {fmt(r, 3)}" for w, r in doc["reuse_over_system"].items()]
    lines += [f"- litevae-b / SD-VAE, {k}: {fmt(r, 2)}" for k, r in doc["litevae_over_sd"].items()]
    return lines


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(reps=3, warmup=1)
    p.add_argument("--rounds", type=int, default=2, help="each (workload, setting) runs this many times")
    p.add_argument("--workloads", nargs="+", default=None, help=f"default: {' | '.join(WORKLOADS)}")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--table", type=Path, default=None, help="print the markdown of a --json result and exit")
    args = p.parse_args()
    if args.table:
        print("\n".join(render_host_memory(json.loads(args.table.read_text()))))
        return
    if args.child:
        write_json(args.json, child(args.child, args.reps, args.warmup, args.threads))
        return
    workloads = tuple(args.workloads or (QUICK_WORKLOADS if args.quick else WORKLOADS))
    runs = []
    for r in range(args.rounds):
        for i, w in enumerate(workloads):
            order = SETTINGS if (r + i) % 2 == 0 else SETTINGS[::-1]
            for s in order:
                row = run_child(w, s, args) | {"setting": s, "round": r}
                runs.append(row)
                log(f"round {r} {w} {s} ({row['host_memory']}): {median_of(row, 'img_s'):.3f} img/s, "
                    f"{median_of(row, 'minor_faults'):.0f} faults/call, kernel "
                    f"{100 * median_of(row, 'system_cpu_share'):.1f}% of CPU, peak RSS {row['peak_rss_mib']:.0f} MiB")
    summary = summarise(runs, workloads)
    for w, ratio in summary["reuse_over_system"].items():
        log(f"{w}: reuse / system = {ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f})")
    for k, ratio in summary["litevae_over_sd"].items():
        log(f"litevae-b / SD-VAE, {k}: {ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f})")
    write_json(args.json, {"section": "host_memory", "rounds": args.rounds, "reps": args.reps, "warmup": args.warmup,
                           "runs": runs, **summary, "machine": runs[0]["machine"]})


if __name__ == "__main__":
    main()
