"""GPU-window benchmark (issues 16, 22, 26): what one short window on one GPU must measure, most needed first.

Arms, in this order (each under its own cap; none starts once the budget is spent; each written at once):
1. train-B: the B recipe's full train step (b-finetune: litevae-b + smc-decoder, unet-disc-s, LPIPS-VGG,
   256 px, bf16), through `training.loop.train_step`: img/s per GPU and peak memory at 16, 32, 8 and 2
   images per GPU; then at 16: channels_last off, cudnn.benchmark on, LPIPS in bf16, `precision: auto`.
2. ddp: one 1-rank DDP step over NCCL in a child process (`gpu_ddp_step.py`).
3. loader: `loader_bench.py --quick` when that file is in the tree (skipped with a line when not).
4. encoders, eager: litevae-b's encoder vs SD-VAE's (diffusers) at 256 px, batch 16 and 1, fp32/bf16 x
   NCHW/channels_last (`gpu_encoders.py`).
5. train-B tuned (cudnn.benchmark on, the faster layout of step 1) at every batch; then compiled at 16: the
   autoencoder alone, then it, the discriminator and LPIPS.
6. train-A: phase A (b-pretrain, 128 px, batch 16) tuned, eager and with the autoencoder compiled.
7. encoders compiled (bf16 first); then train-B with the autoencoder compiled at 32, 8 and 2.
Knobs are set on torch / the modules directly (`gpu_train_arms.py`), so no config key is needed.
Writes OUT/gpu_bench.json and OUT/gpu_bench.md after every arm; SIGINT/SIGTERM write them and exit 130.
Optional dependencies: without lpips, LPIPS is a random-init stand-in of the same shape; without diffusers,
the SD-VAE peer is the registry's; each says so on a `skip:` line and in the output.

--dry-run: the same arms on the CPU with the tiny registered variants and LPIPS-Alex, batches 2 and 1, one
call per arm; compiled: phase A only, with the tracing-only `eager` backend (no compiled B step, whose trace
takes ~40 s of CPU, no compiled encoder: the same function as the eager ones): it checks the plumbing in
`make test`; its figures mean nothing.

    python benchmarks/speed/gpu_bench.py --out bench-results/gpu [--budget-s 360]
    python benchmarks/speed/gpu_bench.py --dry-run --out /tmp/gpu-dry
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import torch  # noqa: E402

import gpu_encoders as enc  # noqa: E402
from gpu_record import Budget, Recorder, Stopped, install_signal_handlers, run_arm, skip  # noqa: E402
from gpu_report import markdown  # noqa: E402
from gpu_train_arms import Arm, train_arm  # noqa: E402


@dataclass
class Setting:
    """What is measured: the real sizes on a GPU, tiny stand-ins for --dry-run."""

    device: str
    precision: str  # the arms' runtime precision (bf16 on the GPU; fp32 in the dry run)
    batches: tuple  # images per GPU; the first is the main batch the knobs are compared at
    encoders: tuple  # (litevae, registry SD-VAE peer)
    diffusers_peer: bool  # the peer from diffusers when it imports
    enc_resolution: int
    enc_batches: tuple
    enc_compiled: list  # (precision, channels_last, compiled) settings measured compiled
    compiled_batches: tuple  # batches the compiled arms run at (train-B; encoders)
    warmup: int
    steps: int  # timed calls per arm at most
    max_s: float  # timed seconds per arm at most (at least one call)
    backend: str  # torch.compile backend
    a_compile: str  # phase A's compiled arm: "model" (the autoencoder) or "all" (and LPIPS)
    budget_s: float
    caps: dict  # arm caps in seconds: eager, compiled, ddp, loader
    overrides: list = field(default_factory=list)  # applied to both presets
    phase_b_overrides: list = field(default_factory=list)


GPU = Setting("cuda", "bf16", (16, 32, 8, 2), ("litevae-b", "sd-vae-encoder"), True, 256, (16, 1),
              enc.SETTINGS_COMPILED, (16, 1, 32, 8, 2), warmup=2, steps=6, max_s=6.0, backend="inductor",
              a_compile="model", budget_s=360,
              caps={"eager": 45, "compiled": 150, "ddp": 90, "loader": 60})
DRY = Setting("cpu", "fp32", (2, 1), ("litevae-tiny", "sd-vae-encoder-tiny"), False, 32, (2, 1),
              [], (), warmup=0, steps=1, max_s=0.0, backend="eager", a_compile="model", budget_s=120,
              caps={"eager": 30, "compiled": 90, "ddp": 60, "loader": 20},
              overrides=["model.encoder=litevae-tiny", "model.decoder=smc-decoder-tiny", "model.nz=4",
                         "data.resolution=32", "loss.lpips_net=alex"],  # AlexNet: builds in half VGG's time
              phase_b_overrides=["discriminator.name=unet-disc-tiny", "data.resolution=64"])  # UNet D: 64 px min


def machine(device: str) -> dict:
    """The GPU (on CUDA) and the host CPU: its model and amx / avx512_bf16 / avx2 flags, threads (issue 22 item 6)."""
    sys.path.insert(0, str(HERE.parent))  # benchmarks/harness.py
    from harness import machine_info

    cpu = machine_info(torch.get_num_threads())
    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), **{k: cpu[k] for k in ("cpu", "cpu_flags", "threads", "cpu_capability")}}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, tf32_conv=torch.backends.cudnn.allow_tf32,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return info


class Bench:
    def __init__(self, s: Setting, rec: Recorder, budget: Budget, dry: bool, out: Path):
        self.s, self.rec, self.budget, self.dry, self.out = s, rec, budget, dry, out
        self.done: dict[Arm, dict] = {}

    def overrides(self, preset: str) -> list[str]:
        return self.s.overrides + (self.s.phase_b_overrides if preset == "b-finetune" else [])

    def train(self, arm: Arm, section: str = "train-B") -> dict:
        if arm in self.done:  # the same knobs were measured by an earlier arm
            return self.done[arm]
        cap = self.s.caps["compiled" if arm.compiled else "eager"]

        def fn():
            if arm.compiled:
                torch._dynamo.reset()  # fresh caches: no arm inherits another's graphs or recompile count
            row = train_arm(arm, self.s.device, self.overrides(arm.preset), self.s.warmup, self.s.steps,
                            self.s.max_s, self.s.backend)
            if arm.compiled:
                torch._dynamo.reset()  # and frees the compiled models' weights
            return row

        row = run_arm(self.rec, self.budget, section, arm.label(), cap, fn, **dataclasses.asdict(arm))
        self.done[arm] = row
        return row

    def rate(self, arm: Arm) -> float:
        row = self.done.get(arm, {})
        return row["img_s"]["median"] if row.get("status") == "ok" else -1.0

    def ddp(self, arm: Arm) -> None:
        def fn():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
                   "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
            path = self.out / "ddp_step.json"
            cmd = [sys.executable, str(HERE / "gpu_ddp_step.py"), "--json", str(path), "--device", self.s.device,
                   "--arm", json.dumps(dataclasses.asdict(arm)), "--overrides", json.dumps(self.overrides(arm.preset)),
                   "--steps", str(self.s.steps), "--warmup", str(self.s.warmup), "--max-s", str(self.s.max_s)]
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=self.s.caps["ddp"])
            if run.returncode != 0:
                raise RuntimeError(f"rc {run.returncode}: {(run.stdout + run.stderr).strip().splitlines()[-1:]}")
            return json.loads(path.read_text())

        run_arm(self.rec, self.budget, "ddp", f"1-rank DDP {arm.label()}", self.s.caps["ddp"], fn)

    def loader(self) -> None:
        path = HERE / "loader_bench.py"
        if not path.is_file():
            skip(self.rec, "loader", "loader_bench.py", "benchmarks/speed/loader_bench.py is not in this tree")
            return
        args = ["--help"] if self.dry else ["--quick", "--json", str(self.out / "loader_bench.json")]

        def fn():
            run = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                                 timeout=self.s.caps["loader"])
            tail = (run.stdout + run.stderr).strip().splitlines()[-5:]
            if run.returncode != 0:
                raise RuntimeError(f"rc {run.returncode}: {tail[-1:] if tail else ''}")
            if self.dry:
                return {"summary": "dry run: loader_bench.py --help ran; not measured."}
            doc = json.loads((self.out / "loader_bench.json").read_text())
            return {"summary": json.dumps({k: v for k, v in doc.items() if k != "machine"}, default=str)[:600],
                    "json": "loader_bench.json"}

        run_arm(self.rec, self.budget, "loader", "loader_bench.py " + " ".join(args), self.s.caps["loader"], fn)

    def encoders(self, settings: list, batches: tuple) -> None:
        lite, registry_peer = self.s.encoders
        peer, source = enc.peer(registry_peer, self.s.diffusers_peer)
        for precision, cl, compiled in settings:  # bf16 first: the likely best on a GPU, when the budget is short
            for batch in batches:
                for model in (lite, peer):
                    def fn(model=model, batch=batch, precision=precision, cl=cl, compiled=compiled):
                        if compiled:
                            torch._dynamo.reset()
                        return enc.encoder_arm(model, self.s.device, batch, self.s.enc_resolution, precision, cl,
                                               compiled, self.s.backend, self.s.warmup, self.s.steps, self.s.max_s)
                    mode = "compiled" if compiled else "eager"
                    name = f"{model} b{batch} {precision} {'CL' if cl else 'NCHW'} {mode}"
                    run_arm(self.rec, self.budget, "encoders", name,
                            self.s.caps["compiled" if compiled else "eager"], fn,
                            peer_source=source if model == peer else "registry")
        rows = self.rec.find("encoders")
        if rows:
            self.rec.doc["encoder_best"] = enc.best_of(rows)
            self.rec.flush()

    def run(self) -> None:
        s = self.s
        main_b, others = s.batches[0], s.batches[1:]
        base = Arm("b-finetune", main_b, s.precision)
        for b in s.batches:  # 1
            self.train(dataclasses.replace(base, batch=b))
        for knob in ({"channels_last": False}, {"cudnn_benchmark": True}, {"lpips_bf16": True},
                     {"precision": "auto"}):
            self.train(dataclasses.replace(base, **knob))
        self.ddp(base)  # 2
        self.loader()  # 3
        self.encoders(enc.SETTINGS_EAGER, s.enc_batches)  # 4
        cl = self.rate(base) >= self.rate(dataclasses.replace(base, channels_last=False))
        tuned = dataclasses.replace(base, cudnn_benchmark=True, channels_last=cl)
        for b in s.batches:  # 5
            self.train(dataclasses.replace(tuned, batch=b))
        for what in ("model", "all"):  # the autoencoder alone first: its compile is the shortest sure figure
            if main_b in s.compiled_batches:
                self.train(dataclasses.replace(tuned, compiled=what))
            else:
                arm = dataclasses.replace(tuned, compiled=what)
                self.rec.put({"section": "train-B", "name": arm.label(), **dataclasses.asdict(arm),
                              "status": "not run", "why": "dry run: the compile plumbing is checked on phase A "
                              "(tracing the B step takes ~40 s of CPU)"})
        phase_a = dataclasses.replace(tuned, preset="b-pretrain")  # 6
        self.train(phase_a, "train-A")
        self.train(dataclasses.replace(phase_a, compiled=s.a_compile), "train-A")
        self.encoders(s.enc_compiled, tuple(b for b in s.enc_batches if b in s.compiled_batches))  # 7
        for b in (b for b in others if b in s.compiled_batches):
            self.train(dataclasses.replace(tuned, batch=b, compiled="model"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_bench.json and gpu_bench.md")
    p.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, one call per arm: plumbing only")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting arms after this many seconds "
                   "(default 360; dry run 120)")
    args = p.parse_args()
    s = DRY if args.dry_run else GPU
    if args.budget_s is not None:
        s.budget_s = args.budget_s
    if args.dry_run:
        torch.set_num_threads(1)  # tiny models run fastest single-threaded, and the test machine is shared
    elif not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device visible; use --dry-run to check the script on a CPU")
    install_signal_handlers()
    doc = {"section": "gpu", "dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d"), "budget_s": s.budget_s,
           "machine": machine(s.device), "setting": dataclasses.asdict(s), "stopped": None}
    rec = Recorder(args.out, doc, markdown)
    t0 = time.perf_counter()
    rc = 0
    try:
        Bench(s, rec, Budget(s.budget_s), args.dry_run, args.out).run()
    except Stopped as sig:
        doc["stopped"] = f"{sig.args[0]} after {time.perf_counter() - t0:.0f} s"
        rc = 130
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    errors = [a["name"] for a in doc["arms"] if a["status"] in ("error",)]
    doc["errors"] = errors
    rec.flush()
    print(markdown(doc), flush=True)
    print(f"[{time.strftime('%H:%M:%S')}] wrote {args.out / 'gpu_bench.json'} and gpu_bench.md in {doc['seconds']} s; "
          f"{len(doc['arms'])} arms, errors: {errors or 'none'}", flush=True)
    return rc or (1 if errors else 0)


if __name__ == "__main__":
    raise SystemExit(main())
