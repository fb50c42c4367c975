"""Markdown tables for BENCHMARKS.md from the section JSON documents that `run.py` collects.

Figures are "median (min-max)" over the timed repeats; ratios are pair by pair (repeat i against
repeat i, in the same process) before their median/min/max is taken. Every table names the
THP_MEM_ALLOC_ENABLE setting of its process.
"""

from __future__ import annotations

from compiled_report import render_compiled
from host_memory_bench import render_host_memory

PEER = "sd-vae (diffusers)"
CEILING_PREFIX = "conv3x3"


def fmt(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def machine_section(docs: list[dict], command: str, total_s: float, main_thp: int) -> list[str]:
    m = next((d["machine"] for d in docs if d.get("machine")), {})
    loads = [d["machine"].get("loadavg_start", [None])[0] for d in docs if d.get("machine")]
    loads = [x for x in loads if x is not None]
    return [
        f"- Command: `{command}` ({total_s / 60:.1f} min)",
        f"- CPU: {m.get('cpu')} ({m.get('logical_cpus')} logical CPUs, torch capability {m.get('cpu_capability')}); "
        f"threads: {m.get('threads')}; torch {m.get('torch')}; Python {m.get('python')}",
        f"- THP_MEM_ALLOC_ENABLE={main_thp} for every figure unless its table says otherwise; kernel THP: "
        f"`{m.get('kernel_thp')}`",
        f"- 1-min load average at section starts: {', '.join(f'{x:.1f}' for x in loads)} (shared machine: "
        "other jobs ran during the measurements; compare ratios, which are pair by pair)",
        "- GPU: not measured, no device available in this session.",
    ]


def encoder_section(doc: dict) -> list[str]:
    rows = [r for r in doc["rows"] if not r["model"].startswith(CEILING_PREFIX)]
    out = [f"Encoders at {doc['resolution']} px, nz={doc['nz']} (the peer's latent_channels), "
           f"THP_MEM_ALLOC_ENABLE={doc['thp']}. `*` = that model's faster layout at this batch and precision; "
           "ratio = litevae / SD-VAE in ITS faster layout, pair by pair.", ""]
    table = []
    for r in sorted(rows, key=lambda r: (r["batch"], r["precision"] != "fp32", r["model"] == PEER, r["model"],
                                          r["layout"])):
        table.append([str(r["batch"]), r["precision"], r["model"], r["layout"] + (" *" if r["best_layout"] else ""),
                      fmt(r["img_s"], 3), f"{r['gflop_s']['median']:.0f}",
                      fmt(r.get("ratio_vs_peer_best")) if r["model"] != PEER else "1"])
    out += _table(["batch", "precision", "model", "layout", "img/s median (min-max)", "GFLOP/s",
                   "vs SD-VAE best"], table)
    return out


def headline(doc: dict) -> list[str]:
    out = []
    for batch in sorted({r["batch"] for r in doc["rows"] if r["model"] == "litevae-b"}):
        for precision in ("fp32", "bf16"):
            b = [r for r in doc["rows"] if r["model"] == "litevae-b" and r["batch"] == batch
                 and r["precision"] == precision and r.get("best_layout")]
            if b and b[0].get("ratio_vs_peer_best"):
                sd = next(r for r in doc["rows"] if r["model"] == PEER and r["batch"] == batch
                          and r["precision"] == precision and r.get("best_layout"))
                out.append(f"- batch {batch}, {precision}: litevae-b ({b[0]['layout']}) / SD-VAE ({sd['layout']}) = "
                           f"**{fmt(b[0]['ratio_vs_peer_best'])}**x")
    return out


def ceiling_section(doc: dict) -> list[str]:
    conv = next((r for r in doc["rows"] if r["model"].startswith(CEILING_PREFIX)), None)
    if conv is None:
        return []
    out = [f"Ceiling: {conv['model']}: {fmt(conv['gflop_s'], 0)} GFLOP/s (measured interleaved with the batch-16 "
           "bf16 encoders). FLOP = 2 x MAC, counted by `model_complexity` (torch.utils.flop_counter).", ""]
    table = [[r["model"], r["layout"] + (" *" if r["best_layout"] else ""), f"{r['gflop_per_img']:.1f}",
              fmt(r["gflop_s"], 0), fmt(r["fraction_of_conv"])]
             for r in doc["rows"] if r.get("fraction_of_conv")]
    return out + _table(["model (batch 16, bf16)", "layout", "GFLOP/img", "GFLOP/s", "fraction of the conv"], table)


def thp_section(docs: list[dict], enc: dict | None) -> list[str]:
    other = [d for d in docs if d.get("name", "").startswith("thp-") and not d.get("failed")]
    if not other or not enc:
        return []
    table = []
    for d in other:
        for r in d["rows"]:
            if r["model"].startswith(CEILING_PREFIX):
                continue
            main = next((m for m in enc["rows"] if m["model"] == r["model"] and m["batch"] == r["batch"]
                         and m["precision"] == r["precision"] and m["layout"] == r["layout"]), None)
            if main is None:
                continue
            by_thp = {enc["thp"]: main, d["thp"]: r}
            on, off = by_thp.get(1), by_thp.get(0)
            table.append([r["model"], str(r["batch"]), r["precision"], r["layout"], fmt(off["img_s"], 3),
                          fmt(on["img_s"], 3), f"{on['img_s']['median'] / off['img_s']['median']:.2f}",
                          fmt(off.get("ratio_vs_peer_best")) if r["model"] != PEER else "1",
                          fmt(on.get("ratio_vs_peer_best")) if r["model"] != PEER else "1"])
    return ["THP=0 and THP=1 figures come from two processes (not interleaved with each other), so their "
            "quotient is median over median; the litevae-b / SD ratio inside each process is pair by pair.", ""] + \
        _table(["model", "batch", "precision", "layout", "img/s THP=0", "img/s THP=1", "THP=1 / THP=0",
                "b/SD THP=0", "b/SD THP=1"], table)


def memory_section(docs: list[dict]) -> list[str]:
    rows = [r | {"thp": d["thp"], "host_memory": d.get("machine", {}).get("host_memory", "?")}
            for d in docs if d.get("section") == "memory" and not d.get("failed") for r in d["rows"]]
    if not rows:
        return []
    table = []
    for r in rows:
        peer = next((q for q in rows if q["model"] == PEER and q["precision"] == r["precision"]
                     and q["host_memory"] == r["host_memory"]), None)
        ratio = f"{r['forward_peak_mb'] / peer['forward_peak_mb']:.2f}" if peer and r["model"] != PEER else "1"
        table.append([r["model"], r["precision"], r["layout"], r["host_memory"], f"{r['forward_peak_mb']:.0f}",
                      f"{r['baseline_rss_mb']:.0f}", ratio, str(r["thp"])])
    return [f"Batch {rows[0]['batch']} at {rows[0]['resolution']} px, one process per row; forward peak = "
            f"peak RSS during the forward minus RSS before it ({rows[0]['method']}). Host memory: `reuse` keeps "
            "freed memory in the process (what CPU runs of the CLI do, `runtime.host_memory`), `system` is glibc's "
            "default (LITEVAE_HOST_MEMORY=system): the activations' own footprint.", ""] + \
        _table(["model", "precision", "layout", "host memory", "forward peak MiB", "baseline RSS MiB", "vs SD-VAE",
                "THP"], table)


def dwt_section(docs: list[dict]) -> list[str]:
    table = []
    for d in sorted((d for d in docs if d.get("section") == "dwt" and not d.get("failed")), key=lambda d: d["thp"]):
        for r in d["rows"]:
            table.append([str(d["thp"]), r["impl"], fmt(r["img_s"], 0), fmt(r["ratio_ours_over_this"]),
                          f"{r['max_abs_err_vs_pywt']:.1e}"])
        for k, v in d.get("notes", {}).items():
            table.append([str(d["thp"]), k, v, "-", "-"])
    if not table:
        return []
    return ["3-level Haar DWT of a 16x3x256x256 float32 batch; ours = `wavedec2` (periodization).", ""] + \
        _table(["THP", "implementation", "img/s", "ours / this", "max abs err vs pywt"], table)


def decoder_section(docs: list[dict]) -> list[str]:
    docs = sorted((d for d in docs if d.get("section") == "decoder" and not d.get("failed")), key=lambda d: -d["thp"])
    if not docs:
        return []
    table = [[str(d["thp"]), r["model"], r["precision"], r["layout"], str(r["batch"]), f"{r['gflop_per_img']:.0f}",
              fmt(r["img_s"], 3), fmt(r["smc_over_this"]) if r["model"] != "smc-decoder" else "1"]
             for d in docs for r in d["rows"]]
    return [f"Latent [B, {docs[0]['nz']}, 32, 32] -> 256 px; each THP setting is its own process.", ""] + \
        _table(["THP", "decoder", "precision", "layout", "batch", "GFLOP/img", "img/s", "smc / this"], table)


def train_section(doc: dict | None) -> list[str]:
    if not doc or doc.get("failed"):
        return []
    table = [[r["model"], fmt(r["img_s"], 3), fmt(r["ratio_vs_sd"])] for r in doc["rows"]]
    return [f"b-pretrain recipe: {doc['resolution']} px, batch {doc['batch']}, {doc['precision']} autocast, "
            f"{doc['layout']}, nz={doc['nz']}, decoder {doc['decoder']}, Adam; loss weights {doc['loss_weights']}; "
            f"{doc['lpips']}. THP_MEM_ALLOC_ENABLE={doc['thp']}.", ""] + \
        _table(["autoencoder", "train img/s", "vs SD-VAE encoder"], table)


def loader_section(doc: dict | None) -> list[str]:
    if not doc or doc.get("failed"):
        return []
    table = [["{}-{}".format(*r["rescale"]), str(r["resolution"]), str(r["workers"]),
              f"on ({r['drafted']:.0%} drafted)" if r["draft"] else "off", fmt(r["total"], 1),
              fmt(r["per_worker"], 1), f"{r['vs_decode_limit']:.2f}"] for r in doc["rows"]]
    return [f"{doc['images']} synthetic JPEGs ({doc['mean_megapixels']:.2f} MP mean), batch {doc['batch']}; "
            f"decode-only limit (PIL open + convert, one process): {fmt(doc['decode_only'], 1)} img/s.", ""] + \
        _table(["rescale", "px", "workers", "draft", "img/s", "img/s per worker", "per worker / decode limit"], table)


def render(docs: list[dict], command: str, total_s: float, main_thp: int) -> list[str] | str:
    by_name = {d.get("name"): d for d in docs}
    enc = by_name.get("encoder")
    enc = None if (enc is None or enc.get("failed")) else enc
    parts = ["## Machine and command", *machine_section(docs, command, total_s, main_thp)]
    if enc:
        parts += ["", "## Headline: litevae-b / SD-VAE encoder, each precision at its best layout", *headline(enc),
                  "", "## 1. Encoder throughput", *encoder_section(enc),
                  "", "## 2. Achieved GFLOP/s against a plain bf16 3x3 conv", *ceiling_section(enc)]
    for title, body in (("3. Peak memory of one encoder forward", memory_section(docs)), ("4. DWT", dwt_section(docs)),
                        ("5. Decoders", decoder_section(docs)),
                        ("6. Phase-A training step", train_section(by_name.get("train"))),
                        ("7. THP_MEM_ALLOC_ENABLE", thp_section(docs, enc)),
                        ("8. Training loader", loader_section(by_name.get("loader"))),
                        ("9. Host memory kept for reuse", render_host_memory(by_name.get("host-memory")))):
        if body:  # a section that did not run (--sections) leaves no empty heading
            parts += ["", f"## {title}", *body]
    parts += render_compiled(docs)
    failed = [d.get("name") or d.get("section") for d in docs if d.get("failed")]
    if failed:
        parts += ["", f"Failed sections: {', '.join(map(str, failed))}"]
    partial = [d.get("name") or d.get("section") for d in docs if d.get("partial")]
    if partial:
        parts += ["", f"Sections with errors (the parts that ran are above): {', '.join(map(str, partial))}"]
    return "\n".join(parts) + "\n"
