"""Issue 16 item 4a: the CUDA paths, run by `scripts/gpu_check.sh` on one GPU; skipped without CUDA.

Every test is marked `gpu` (select them with `-m gpu`). On a machine without CUDA they are skipped at
collection, so `make test` stays green and fast. What each covers:
- forward/backward of every registered model on CUDA (shapes, finite outputs, a gradient for every
  parameter: the CPU test's `_forward_backward`, moved to the GPU);
- training steps of the B architecture (litevae-b + smc-decoder + unet-disc-s, EMA) in bf16 autocast and
  in fp16 with the GradScaler, through the real `train()` with loader workers (pinned host memory);
- a resume on CUDA: 2 + 2 steps against 4 straight (same data, same losses step by step);
- encode-dataset on CUDA: pinned host buffers, and the same moments as on CPU.
Optional packages (issue 26): without tensorboard the tb/ check is skipped (training only notes it), without
webdataset the encode test is skipped; nothing here needs pywavelets.
"""

import importlib.util
import io
import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from litevae_cli.files.checkpoint import load_checkpoint
from litevae_cli.models import list_models
from litevae_cli.training.loop import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

B_ARCH = {
    "name": "gpu-b", "phase": "pretrain",
    "model": {"encoder": "litevae-b", "decoder": "smc-decoder", "nz": 12},
    "discriminator": {"name": "unet-disc-s", "start_step": 0},
    "data": {"resolution": 64, "workers": 2},
    "loss": {"lpips": 0.0, "adversarial": 0.1},  # LPIPS-VGG on CUDA is timed by benchmarks/speed/gpu_bench.py
    "train": {"steps": 4, "batch_size": 4, "precision": "bf16", "ema_decay": 0.999, "seed": 0},
    "log": {"every": 1, "sample_every": 2, "checkpoint_every": 2, "tensorboard": True},
}


@pytest.fixture
def no_tf32():
    """Full fp32 convolutions and matmuls, so CUDA results can be compared with tight tolerances."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _images(folder, n=8, size=80):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 8 * i, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return str(folder)


def _preset(tmp_path, **sections):
    data = yaml.safe_load(yaml.safe_dump(B_ARCH))
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / f"preset-{len(list(tmp_path.glob('preset-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_on_cuda(name):
    from test_models import _forward_backward

    _forward_backward(name, size=64, device="cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_train_steps_on_cuda(tmp_path, precision):
    data = _images(tmp_path / "images")
    run = tmp_path / "run"
    assert train("pretrain", _preset(tmp_path, train={"precision": precision}), data, run, device="cuda") == 0
    records = _metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["g/total"]) and math.isfinite(r["d/total"]) for r in records)
    assert records[-1]["nonfinite_steps"] == 0
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4 and all(v.device.type == "cpu" for v in ckpt["model"].values())
    scale = ckpt["scaler"].get("scale")
    assert (scale is not None and scale > 0) if precision == "fp16" else not ckpt["scaler"]  # GradScaler in fp16 only
    assert (run / "samples" / "step-0000004.png").is_file()
    if importlib.util.find_spec("tensorboard") is not None:  # optional here (scripts/gpu_check.sh, issue 26)
        assert any((run / "tb").iterdir())


def test_resume_on_cuda_follows_the_uninterrupted_run(tmp_path, no_tf32):
    data = _images(tmp_path / "images")
    preset = _preset(tmp_path, train={"precision": "fp32"}, optim={"lr": 1e-3, "disc_lr": 1e-3})
    assert train("pretrain", preset, data, tmp_path / "straight", device="cuda") == 0
    assert train("pretrain", preset, data, tmp_path / "resumed", device="cuda", steps=2) == 0
    assert train("pretrain", preset, data, tmp_path / "resumed", device="cuda") == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4 and a["data_position"] == b["data_position"]
    # The same images and posterior noise after the resume: the losses of steps 3 and 4 agree (a wrong data
    # position or RNG state would change them by far more than CUDA's non-deterministic reductions do).
    for ra, rb in zip(_metrics(tmp_path / "straight")[2:], _metrics(tmp_path / "resumed")[2:]):
        assert ra["step"] == rb["step"] and rb["g/total"] == pytest.approx(ra["g/total"], rel=1e-3), ra["step"]
    mid = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step-0000002.pt")
    moved = sum((a["model"][k] - mid["model"][k]).abs().sum() for k in a["model"] if a["model"][k].is_floating_point())
    apart = sum((a["model"][k] - b["model"][k]).abs().sum() for k in a["model"] if a["model"][k].is_floating_point())
    assert apart < 0.05 * moved, (float(apart), float(moved))


def test_encode_dataset_on_cuda_with_pinned_memory(tmp_path, tiny_ckpt, monkeypatch, no_tf32):
    wds = pytest.importorskip("webdataset", reason="encode-dataset writes webdataset shards")

    from litevae_cli import runtime
    from litevae_cli.latents.encode import encode_dataset

    data = _images(tmp_path / "images", n=6, size=48)
    pinned = []
    to_host = runtime.Runtime.to_host

    def spy(rt, t):
        host, ev = to_host(rt, t)
        pinned.append(host.is_pinned())
        return host, ev

    monkeypatch.setattr(runtime.Runtime, "to_host", spy)
    common = dict(resolution=32, batch_size=4, shard_size=4, dtype="fp32", workers=2, progress_bar=False)
    with runtime.open("cuda", "fp32") as rt:
        cuda_stats = encode_dataset(rt, tiny_ckpt, data, tmp_path / "cuda", **common)
    assert pinned and all(pinned)  # every batch's moments came back through pinned host memory
    with runtime.open("cpu", "fp32") as rt:
        encode_dataset(rt, tiny_ckpt, data, tmp_path / "cpu", **common)
    assert cuda_stats["count"] == 6

    def moments(out):
        shards = sorted(str(p) for p in out.glob("latents-*.tar"))
        return {s["__key__"]: np.load(io.BytesIO(s["moments.npy"])) for s in wds.WebDataset(shards, shardshuffle=False)}

    on_cuda, on_cpu = moments(tmp_path / "cuda"), moments(tmp_path / "cpu")
    assert on_cuda.keys() == on_cpu.keys() and len(on_cuda) == 6
    for key in on_cpu:
        np.testing.assert_allclose(on_cuda[key], on_cpu[key], atol=1e-4, rtol=1e-4)
