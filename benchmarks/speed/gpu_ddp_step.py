"""One 1-rank DDP train step over NCCL (gloo on the CPU), in its own process: `gpu_bench.py` runs it.

The parent sets torchrun's variables for one rank (MASTER_ADDR=127.0.0.1, a free MASTER_PORT, RANK=0,
WORLD_SIZE=1, LOCAL_RANK=0). This joins a process group of one (with a timeout, and `device_id` on CUDA
so NCCL binds its communicator at once), wraps the autoencoder and the discriminator in
DistributedDataParallel as `Runtime.wrap` does under torchrun, and times the B recipe's train step: so the
DDP gradient hooks, NCCL's all-reduce and a collective outside DDP run on one GPU. Writes one JSON.

    python benchmarks/speed/gpu_ddp_step.py --json OUT.json [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from gpu_train_arms import Arm, train_arm  # noqa: E402


def _nccl_version() -> str:
    v = torch.cuda.nccl.version()  # a tuple in current torch, an int in older ones
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--arm", required=True, help="the Arm's fields as JSON")
    p.add_argument("--device", default="cuda")
    p.add_argument("--overrides", default="[]", help="preset overrides as a JSON list")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-s", type=float, default=10.0)
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    cuda = args.device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    t0 = time.perf_counter()
    kwargs = {"timeout": datetime.timedelta(seconds=120)}
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(backend, init_method="env://", rank=0, world_size=1, **kwargs)
    doc = {"backend": backend, "init_s": round(time.perf_counter() - t0, 2),
           "nccl_version": _nccl_version() if cuda else None}
    try:
        probe = torch.ones(4, device=args.device)
        dist.all_reduce(probe)
        doc["all_reduce_ok"] = bool((probe == 1).all())

        def wrap(rt, state):
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [rt.device.index] if rt.device.type == "cuda" else None
            state.model_ddp = DDP(state.model, device_ids=ids)
            if state.disc is not None:
                state.disc_ddp = DDP(state.disc, device_ids=ids)
            doc["wrapped"] = [type(state.model_ddp).__name__, type(state.disc_ddp).__name__ if state.disc else None]

        doc.update(train_arm(Arm(**json.loads(args.arm)), args.device, json.loads(args.overrides), args.warmup,
                             args.steps, args.max_s, "inductor", wrap_state=wrap))
    finally:
        dist.destroy_process_group()
    args.json.write_text(json.dumps(doc, default=str))
    print(json.dumps({k: doc[k] for k in ("backend", "init_s", "all_reduce_ok", "img_s")}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
