"""Issue 26 item 3: at most one host sync per optimizer step in steady state.

On CPU a host sync cannot be observed, so every Python-level way to read a tensor on the host
(`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool()`, `float()`, `int()`) is counted through
`torch.Tensor` wrappers while `fit` trains the tiny preset from an in-memory batch stream (data
loading runs in workers in real runs and is not part of the step). Each step's count covers the
`train_step` call and the loop's work up to the next step; the last segment (the final status
line and checkpoint, which read by design) is checked apart. With CUDA, the same loop runs under
`torch.cuda.set_sync_debug_mode`, which also sees syncs inside torch's own C++ code (marked gpu).
"""

import warnings

import pytest
import torch
from conftest import merged_preset

from litevae_cli.config import config_from_dict
from litevae_cli.jobs.stopping import StopSignal
from litevae_cli.runtime import setup_runtime
from litevae_cli.training import loop
from litevae_cli.training.losses import GeneratorLoss
from litevae_cli.training.state import build_train_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
STEPS = 4


def _cfg(disc=None, resolution=32, accum=1, **train):
    sections = {"data": {"resolution": resolution},
                "train": {"steps": STEPS, "batch_size": 2 * accum, "grad_accum": accum, "ema_decay": 0.9, **train},
                "log": {"every": 1000, "checkpoint_every": 1000, "sample_every": 1000}}
    if disc:
        sections["discriminator"] = {"name": disc, "start_step": 0}
    return config_from_dict(merged_preset(sections))


def _batches(resolution, device="cpu"):
    g = torch.Generator().manual_seed(0)
    while True:
        images = torch.randint(0, 256, (2, 3, resolution, resolution), generator=g, dtype=torch.uint8)  # as loaders give
        yield {"images": images.pin_memory() if device == "cuda" else images, "skipped": 0, "failed": []}


def _fit_counting(monkeypatch, tmp_path, cfg, rt, count):
    """Run `fit`; return (reads per step, reads of the final segment). `count()` is the running total."""
    torch.manual_seed(0)
    loss_fn = rt.place(GeneratorLoss(cfg.loss, cfg.discriminator.loss, run_precision=rt.precision))
    state = build_train_state(rt, cfg)
    marks = []
    real_step = loop.train_step

    def marked_step(*args, **kwargs):
        marks.append(count())
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", marked_step)
    with StopSignal() as signals:
        assert loop.fit(rt, cfg, state, _batches(cfg.data.resolution, rt.device.type), loss_fn, tmp_path, signals) == 0
    assert state.step == STEPS and state.nonfinite_total == 0
    marks.append(count())
    return [b - a for a, b in zip(marks[:-2], marks[1:-1])], marks[-1] - marks[-2]


@pytest.fixture
def host_reads(monkeypatch):
    """Counts the Python-level host reads of tensors; yields the list of method names called."""
    calls = []
    for name in READS:
        def counted(self, *args, _real=getattr(torch.Tensor, name), _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize("disc,resolution,accum", [(None, 32, 1), ("patchgan-tiny", 32, 2), ("unet-disc-tiny", 64, 1)])
def test_one_host_read_per_optimizer_step(monkeypatch, tmp_path, host_reads, disc, resolution, accum):
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    per_step, final = _fit_counting(monkeypatch, tmp_path, _cfg(disc, resolution, accum), rt, lambda: len(host_reads))
    # Exactly one: the step's combined flags (so the counter does see reads); the first step included.
    assert per_step == [1] * (STEPS - 1), (per_step, host_reads)
    assert final >= 1  # the last step's flags and the final status line do read (not a steady-state step)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("disc,resolution", [(None, 32), ("unet-disc-tiny", 64)])
def test_cuda_sync_debug_sees_at_most_one_sync_per_step(monkeypatch, tmp_path, disc, resolution):
    """`set_sync_debug_mode('warn')` also reports syncs in torch's C++ code. 'error' cannot cover a whole step
    (its one flag read is a sync by design), so whole steps are counted in 'warn' mode; the loss and the
    EMA update, which must not sync at all, run in 'error' mode."""
    rt = setup_runtime("cuda", "bf16", init_distributed=False)
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            per_step, _ = _fit_counting(monkeypatch, tmp_path, _cfg(disc, resolution, precision="bf16"), rt,
                                        lambda: len([w for w in caught if "synchroniz" in str(w.message)]))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        seen = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert per_step[1:] and max(per_step[1:]) <= 1, (per_step, seen[:5])

    from litevae_cli.training.state import update_ema

    cfg = _cfg(disc, resolution)
    loss_fn = rt.place(GeneratorLoss(cfg.loss, cfg.discriminator.loss))
    state = build_train_state(rt, cfg)
    x = torch.rand(2, 3, resolution, resolution, device="cuda") * 2 - 1
    torch.cuda.set_sync_debug_mode("error")
    try:
        x_hat, posterior = state.model(x)
        total, _ = loss_fn(x, x_hat, posterior)
        total.backward()
        update_ema(state.ema, state.model, 0.9, 3, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
