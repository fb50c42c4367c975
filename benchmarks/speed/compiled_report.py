"""Markdown tables (for BENCHMARKS.md) from the issue-22 compiled sections: `compiled_encoders.py`, `op_profile.py`,
`compiled_train.py`. `report.py` calls `render_compiled(docs)`; op_profile prints `profile_tables` itself.
Figures are "median (min-max)" over the timed repeats; ratios pair by pair, as in `report.py`.
"""

from __future__ import annotations

from op_kinds import kind_order


def fmt(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def machine_line(doc: dict) -> str:
    m = doc.get("machine", {})
    flags = ", ".join(m.get("cpu_flags") or []) or "none of amx/avx512_bf16/avx2"
    return (f"Machine: {m.get('cpu')} (flags: {flags}), "
            f"{m.get('threads')} threads, torch {m.get('torch')}.")


def _goal(g: dict | None) -> str:
    if not g:
        return ""
    verdict = "met" if g["met"] else f"missed by {g['shortfall_pct']}%"
    return f" (goal >= {g['target']}x: {verdict})"


def encoders_tables(doc: dict) -> list[str]:
    out = [f"Encode (encoder + quant conv for the peer; nz {doc['nz']}) at {doc['resolution']} px, dynamo backend "
           f"`{doc['backend']}`, one compiled copy per setting (`torch.compile(dynamic=False)`); compile s = its "
           f"first call. `precision: auto` here: {doc['auto']['precision']} ({doc['auto']['reason']}). "
           + (f"GroupNorm in `compiled`: {doc['group_norm']['kernels']} ({doc['group_norm']['why']}); "
              "`compiled-inductor-gn`: inductor's own. " if "group_norm" in doc else "")
           + machine_line(doc), ""]
    for b in doc["batches"]:
        if "rows" not in b:  # a --prewarm document
            continue
        best = set(b["best"].values())
        rows = [[r["model"], r["mode"], r["precision"], r["layout"] + (" *" if r["setting"] in best else ""),
                 fmt(r["img_s"], 3), "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"] for r in b["rows"]]
        out += [f"Batch {b['batch']} (`*` = the model's best setting):", ""]
        out += _table(["model", "mode", "precision", "layout", "img/s median (min-max)", "compile s"], rows) + [""]
        if "ratio_vs_peer" in b:
            r = b["ratio_vs_peer"]
            out.append(f"- batch {b['batch']}: {doc['litevae']} best (`{r['litevae']}`) / SD-VAE best (`{r['peer']}`) "
                       f"= **{fmt(r['ratio'])}x**{_goal(r['goal'])}")
        for c in b.get("compiled_over_eager", {}).values():
            out.append(f"- batch {b['batch']}: {c['model']} {c['mode']} / eager at {c['precision']} (best layout of "
                       f"each) = {fmt(c['ratio'])}x{_goal(c['goal'])}")
        out.append("")
    return out


def profile_tables(doc: dict) -> list[str]:
    out = [f"Self CPU time per forward by op kind (torch.profiler, {doc['reps']} forwards), batch {doc['batch']} at "
           f"{doc['resolution']} px, {doc['precision']} {doc['layout']}; compiled = backend `{doc['backend']}` with "
           "inductor's kernel profiling on. " + machine_line(doc), ""]
    rows = [r for r in doc["rows"] if "kinds" in r]
    kinds = sorted({k for r in rows for k in r["kinds"]}, key=kind_order)
    header = ["model", "mode", "total ms"] + kinds
    table = [[r["model"], r["mode"], f"{r['total_ms']:.1f}"]
             + [f"{r['kinds'][k]['ms']:.1f} ({r['kinds'][k]['pct']:.0f}%)" if k in r["kinds"] else "-" for k in kinds]
             for r in rows]
    out += _table(header, table) + [""]
    for r in rows:
        out += [f"Top {len(r['top'])} ops, {r['model']} {r['mode']} (wall {r['wall_ms_unprofiled']:.1f} ms per "
                f"forward unprofiled, {r['wall_ms_profiled']:.1f} ms profiled):", ""]
        out += _table(["op", "kind", "ms", "%", "calls"], [[f"`{o['op']}`", o["kind"], f"{o['ms']:.2f}",
                                                            f"{o['pct']:.0f}", f"{o['calls']:g}"] for o in r["top"]])
        out.append("")
    return out


def train_tables(doc: dict) -> list[str]:
    rows = [r for r in doc["rows"] if "compiled_over_eager" in r]
    if not rows:
        return []
    compiled = ", ".join(sorted({m for r in rows for m in r["compiled"]["modules"]}))
    out = [f"`training.step.train_step` per phase, eager vs `compile_models` (backend `{doc['backend']}`) of "
           f"{compiled} (as `runtime.compile` does); steps interleaved, ratio pair by pair; LPIPS with a random "
           "backbone (cost only). " + machine_line(doc), ""]
    table = [[f"{r['phase']} ({r['preset']})", str(r["resolution"]), str(r["batch"]), r["discriminator"] or "-",
              r["lpips"], r["precision"], fmt(r["eager"]["img_s"], 3), fmt(r["compiled"]["img_s"], 3),
              fmt(r["compiled_over_eager"]),
              f"{r['compiled']['first_step_s']:.0f} + {r['compiled']['second_step_s']:.0f}",
              str(r["compiled"]["recompiles_while_timing"])] for r in rows]
    return out + _table(["phase", "px", "batch", "discriminator", "LPIPS", "precision", "eager img/s",
                         "compiled img/s", "compiled / eager", "warm-up s (step 1 + 2)", "recompiles timed"], table)


def goal_notes(docs: list[dict]) -> list[str]:
    """One line per missed issue-22 goal: by how much, and the op kinds that take litevae's time in the profile."""
    enc = next((d for d in docs if d.get("section") == "compiled_encoders" and "batches" in d
                and not d.get("prewarm")), None)
    prof = next((d for d in docs if d.get("section") == "op_profile" and not d.get("failed")
                 and not d.get("prewarm")), None)
    if enc is None:
        return []
    shows = ""
    if prof:
        parts = []
        for r in (r for r in prof["rows"] if r["model"] == enc["litevae"] and "kinds" in r):
            top = sorted(r["kinds"].items(), key=lambda kv: -kv[1]["ms"])[:3]
            parts.append(f"{r['mode']}: " + ", ".join(f"{k} {v['pct']:.0f}%" for k, v in top))
        shows = f"; the profile of {enc['litevae']} (batch {prof['batch']}) shows " + " / ".join(parts) if parts else ""
    out = []
    for b in enc["batches"]:
        missed = [(f"{enc['litevae']} / SD-VAE", b.get("ratio_vs_peer"))] + \
            [(f"{c['model']} {c['mode']} / eager", c) for c in b.get("compiled_over_eager", {}).values()]
        for what, r in missed:
            if r and r.get("goal") and not r["goal"]["met"]:
                out.append(f"- Goal missed at batch {b['batch']}: {what} = {r['ratio']['median']:.2f}x against "
                           f">= {r['goal']['target']}x (short by {r['goal']['shortfall_pct']}%){shows}.")
    return out


def compile_check_table(doc: dict) -> list[str]:
    rows = [[r["model"], r["mode"], str(r["graphs"]), "yes" if r["graphs"] == 1 else "**no**", f"{r['first_call_s']:.1f}",
             f"{r['max_abs_diff']:.1e}"] for r in doc["rows"]]
    return ["", f"`torch.compile(fullgraph=True)`, backend `{doc.get('backend', '?')}`: a call at batch 2, then batch 3 "
            "and a new side; graphs = what dynamo compiled in all (1: no recompile).", "",
            *_table(["model", "mode", "graphs", "one graph", "first call s", "max diff to eager"], rows)]


def render_compiled(docs: list[dict]) -> list[str]:
    """The issue-22 sections among `docs` (run.py's section documents), as Markdown lines; [] when none ran."""
    out = []
    for d in docs:
        name = d.get("section")
        if d.get("failed") or d.get("prewarm"):
            continue
        if d.get("errors"):
            out += ["", f"Errors in {d.get('name') or name} (left out of its tables):",
                    *[f"- `{k}`: {v}" for k, v in d["errors"].items()]]
        if name == "compiled_encoders":
            out += ["", "## Compiled encoders: litevae-b vs SD-VAE, every setting", *encoders_tables(d)]
        elif name == "op_profile":
            out += ["", "## Op-kind profile of the encoders", *profile_tables(d)]
        elif name == "compiled_train":
            out += ["", "## Train step, eager vs compiled", *train_tables(d)]
        elif name == "compile_check":
            out += ["", "## Full-size compile check", *compile_check_table(d)]
        elif name == "fusion_bound":
            out += ["", "## Fusion bound: litevae-b without the work a fused GroupNorm+SiLU kernel could hide",
                    "", f"Eager, {d['precision']} {d['layout']}, batch {d['batch']}, {d['resolution']} px; the probes "
                    "are cost measurements, not models; `fused-kernel`, where measured, is a model with a hand-written kernel "
                    "(fusion_bound.py, gn_silu_kernel.c).", "", *d["table"].splitlines()]
    if notes := goal_notes(docs):
        out += ["", "## Issue-22 goals missed", *notes]
    return out
