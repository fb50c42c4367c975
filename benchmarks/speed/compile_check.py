"""The compile check of the full-size registered models (issue 22 item 1): `torch.compile(fullgraph=True)`
on every model in eval and train mode, inputs marked by `models.compiling.mark_dynamic`, then a batch
change and a resolution change, each GroupNorm routed as `--compile` routes it on this CPU
(`runtime.compiled_models`; LITEVAE_COMPILE_GROUP_NORM=inductor checks inductor's own). Per model and mode: graphs compiled (1 = no recompile), first-call
(compile) seconds, the largest output difference against eager, and eager vs compiled ms per call.

Inductor on CPU compiles a full-size model for minutes on 2 cores: `--models` picks some, `--quick` runs
the tiny variants; `tests/test_compile.py` is the same check on the tiny variants with the tracing-only
backend. `python benchmarks/speed/compile_check.py --models litevae-b --json OUT.json`.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import base_parser, log, setup_threads, write_json

from litevae_cli.models import create_model, get_entry, list_models
from litevae_cli.models.compiling import mark_dynamic
from litevae_cli.runtime.compiled_models import route_for

SIDES = {"unet-disc": (128, 192)}  # multiples of 64 whose 6th level is more than 1 px; others: (64, 96)


class GraphCounter:
    """Counts the graphs dynamo compiles, handing each to the real backend."""

    def __init__(self, backend: str):
        self.backend, self.graphs = torch._dynamo.lookup_backend(backend), 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self.backend(gm, example_inputs)


def _input(model, name: str, n: int, side: int) -> torch.Tensor:
    if get_entry(name).kind == "decoder":
        return mark_dynamic(torch.randn(n, model.nz, side // 8, side // 8))
    return mark_dynamic(torch.rand(n, 3, side, side) * 2 - 1)


def _first(out) -> torch.Tensor:
    if torch.is_tensor(out):
        return out
    return out[0] if isinstance(out, tuple) else out.moments


def _ms(fn, x, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def check(name: str, mode: str, backend: str, reps: int) -> dict:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = getattr(create_model(name), mode)()
    twin = copy.deepcopy(model)
    routing = route_for(torch.device("cpu"), twin)  # as --compile does on this CPU
    counter = GraphCounter(backend)
    compiled = torch.compile(twin, fullgraph=True, backend=counter)
    side, other = next((v for k, v in SIDES.items() if name.startswith(k)), (64, 96))
    row = {"model": name, "mode": mode, "backend": backend, "sides": [side, other],
           "group_norm": {k: routing[k] for k in ("kernels", "routed")}}
    with torch.set_grad_enabled(mode == "train"):
        x = _input(model, name, 2, side)
        t = time.perf_counter()
        got = _first(compiled(x))
        row["first_call_s"] = round(time.perf_counter() - t, 1)
        row["max_abs_diff"] = float((got - _first(model(x))).detach().abs().max())
        for n, s in ((3, side), (3, other)):
            compiled(_input(model, name, n, s))
        row["graphs"] = counter.graphs
        x = _input(model, name, 2, side)
        row["eager_ms"] = round(_ms(model, x, reps), 1)
        row["compiled_ms"] = round(_ms(compiled, x, reps), 1)
    log(f"{name} {mode}: {row}")
    return row


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help="registered names (default: every full-size model)")
    p.add_argument("--modes", nargs="+", choices=("eval", "train"), default=["eval", "train"])
    p.add_argument("--backend", default="inductor", help="dynamo backend (default inductor; eager: tracing only)")
    args = p.parse_args()
    setup_threads(args.threads)
    names = args.models or [n for n in list_models() if get_entry(n).test_variant == args.quick]
    rows = [check(name, mode, args.backend, args.reps) for name in names for mode in args.modes]
    failed = [f"{r['model']} {r['mode']}" for r in rows if r["graphs"] != 1]
    write_json(args.json, {"section": "compile_check", "backend": args.backend, "rows": rows, "recompiled": failed})
    if failed:
        print(f"recompiled: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(3)  # run.py's PARTIAL: the JSON is written and says which models recompiled


if __name__ == "__main__":
    main()
