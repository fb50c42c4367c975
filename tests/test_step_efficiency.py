"""Issue 26 items 4 and 7 (and the parts of 3 that are not a sync count): what the train step does
to run fast, checked on CPU with tiny models and, for CUDA decisions, a Runtime on a mocked cuda device.

- memory format per module (`runtime.use_channels_last`, `runtime.channels_last`) and cudnn.benchmark
  (`runtime.cudnn_benchmark`), both switchable and in the run record;
- the discriminator once per step on real + fake (no BatchNorm) with one spectral-norm power iteration;
  DDP's broadcast_buffers only for BatchNorm; a non-finite discriminator loss skipped on the device;
- EMA through `torch._foreach_lerp_` equal to the per-parameter lerp; the blur kernels cached;
  checkpoint tensors copied to the host in one go; LPIPS in bf16 within the stated tolerance of fp32.
"""

import copy

import pytest
import torch
from conftest import merged_preset

from litevae_cli import runtime
from litevae_cli.config import config_from_dict, resolve_config
from litevae_cli.errors import UserError
from litevae_cli.models import create_autoencoder, create_model
from litevae_cli.model_spec import ModelSpec
from litevae_cli.runtime import Runtime, channels_last_parts, configure, memory_record, setup_runtime, use_channels_last
from litevae_cli.training import loop, step
from litevae_cli.training.losses import (LPIPS_BF16_ATOL, LPIPS_BF16_RTOL, GeneratorLoss, _blur_kernels, discriminate,
                                         gaussian_loss, lpips_bf16, resolve_lpips_precision)
from litevae_cli.training.state import (all_finite, build_train_state, host_copy, make_adam, run_record, step_unless,
                                        update_ema)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_AE = ModelSpec.from_dict({"encoder": "litevae-tiny", "decoder": "smc-decoder-tiny", "nz": 4})


def _cuda_rt(mode="auto", precision="bf16"):
    return Runtime(torch.device("cuda", 0), precision, channels_last=mode)  # never placed on: decisions only


# ------------------------------------------------------------------------------- memory format, cudnn
def test_channels_last_per_module_on_cuda_groupnorm_heavy_encoder_stays_contiguous():
    ae = create_autoencoder(TINY_AE)
    rt = _cuda_rt()
    assert not use_channels_last(rt, ae.encoder)  # 80 GroupNorms per 108 convs
    assert use_channels_last(rt, ae.decoder)  # the SMC decoder has no GroupNorm
    assert all(use_channels_last(rt, create_model(d)) for d in ("unet-disc-tiny", "patchgan-tiny", "gigagan-tiny"))
    assert not use_channels_last(rt, create_model("sd-vae-decoder-tiny"))  # 14 GroupNorms per 21 convs
    assert not use_channels_last(rt)  # the image batch: read first by the (contiguous) encoder
    assert channels_last_parts(rt, ae) == [ae.decoder]
    assert channels_last_parts(_cuda_rt("on"), ae) == [ae.encoder, ae.decoder] and use_channels_last(_cuda_rt("on"))
    assert channels_last_parts(_cuda_rt("off"), ae) == [] and not use_channels_last(_cuda_rt("off"), ae.decoder)
    cpu_bf16, cpu_fp32 = Runtime(torch.device("cpu"), "bf16"), Runtime(torch.device("cpu"), "fp32")
    assert channels_last_parts(cpu_bf16, ae) == [ae.encoder, ae.decoder] and channels_last_parts(cpu_fp32, ae) == []
    record = memory_record(rt, {"encoder": ae.encoder, "decoder": ae.decoder, "discriminator": None})
    assert record == {"channels_last": "auto", "channels_last_modules": {"encoder": False, "decoder": True},
                      "cudnn_benchmark": False}


def test_place_applies_the_per_module_choice():
    rt = configure(setup_runtime("cpu", "fp32", init_distributed=False), "on", "off")
    ae = rt.place(create_autoencoder(TINY_AE), channels_last=True)
    conv = next(p for p in ae.encoder.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain = configure(rt, "off", "off").place(create_autoencoder(TINY_AE), channels_last=True)
    assert all(p.is_contiguous() for p in plain.parameters())


@pytest.fixture
def keep_cudnn_benchmark():
    before = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = before


def test_cudnn_benchmark_auto_on_cuda_only_and_switchable(keep_cudnn_benchmark):
    assert configure(_cuda_rt(), "auto", "auto").cudnn_benchmark and torch.backends.cudnn.benchmark
    assert not configure(_cuda_rt(), "auto", "off").cudnn_benchmark and not torch.backends.cudnn.benchmark
    cpu = Runtime(torch.device("cpu"), "fp32")
    assert not configure(cpu, "auto", "auto").cudnn_benchmark and configure(cpu, "auto", "on").cudnn_benchmark
    with pytest.raises(UserError, match="auto, on, off"):
        configure(cpu, "sometimes", "auto")


def test_runtime_keys_read_yaml_on_off_and_reach_the_run_record(tmp_path, keep_cudnn_benchmark):
    preset = tmp_path / "p.yaml"
    preset.write_text("name: p\nphase: pretrain\nmodel: {encoder: litevae-tiny, decoder: smc-decoder-tiny, nz: 4}\n"
                      "train: {steps: 1}\nruntime: {channels_last: off, cudnn_benchmark: on}\n")
    cfg = resolve_config(str(preset))
    assert (cfg.runtime.channels_last, cfg.runtime.cudnn_benchmark) == ("off", "on")
    rt = configure(setup_runtime("cpu", "fp32", init_distributed=False), cfg.runtime.channels_last,
                   cfg.runtime.cudnn_benchmark)
    ae = create_autoencoder(TINY_AE)
    record = run_record(str(tmp_path), rt, {"encoder": ae.encoder, "decoder": ae.decoder})
    assert record["channels_last"] == "off" and record["cudnn_benchmark"] is True
    assert record["channels_last_modules"] == {"encoder": False, "decoder": False}


# ------------------------------------------------------------------------------- discriminator, DDP
def _count_power_iterations(monkeypatch):
    from torch.nn.utils.parametrizations import _SpectralNorm

    calls = []
    real = _SpectralNorm._power_method

    def counted(self, *args, **kwargs):
        calls.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(_SpectralNorm, "_power_method", counted)
    return calls


def _state(disc, resolution, **sections):
    cfg = config_from_dict(merged_preset({"data": {"resolution": resolution},
                                          "discriminator": {"name": disc, "start_step": 0}}, sections))
    torch.manual_seed(0)
    return cfg, build_train_state(setup_runtime("cpu", "fp32", init_distributed=False), cfg)


def test_discriminator_runs_once_on_real_and_fake_with_one_power_iteration(monkeypatch):
    _, state = _state("unet-disc-tiny", 64)
    x, x_fake = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    layers = sum(1 for m in state.disc.modules() if type(m).__name__ == "_SpectralNorm")
    calls = _count_power_iterations(monkeypatch)
    real, fake = discriminate(state.disc, state.disc, x, x_fake)
    assert len(calls) == layers  # one power iteration per spectral-norm layer (two calls made it two)
    state.disc.eval()  # no power iteration: concatenated and separate calls see the same weights
    real, fake = discriminate(state.disc, state.disc, x, x_fake)
    for joint, alone in zip(real + fake, state.disc(x) + state.disc(x_fake)):
        torch.testing.assert_close(joint, alone, rtol=1e-5, atol=1e-6)


def test_batchnorm_discriminator_keeps_separate_real_and_fake_batches():
    _, state = _state("patchgan-tiny", 32)
    twin = copy.deepcopy(state.disc)
    x, x_fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    real, fake = discriminate(state.disc, state.disc, x, x_fake)
    assert torch.equal(real[0], twin(x)[0]) and torch.equal(fake[0], twin(x_fake)[0])
    assert runtime.needs_buffer_broadcast(state.disc)


def test_ddp_broadcasts_buffers_only_for_batchnorm(monkeypatch):
    import torch.nn.parallel

    made = []

    def fake_ddp(module, device_ids=None, find_unused_parameters=False, forward_sync_buffers=None):  # torch 2.14's name
        made.append({"forward_sync_buffers": forward_sync_buffers})
        return module

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", fake_ddp)
    rt = Runtime(torch.device("cpu"), "fp32", rank=0, world_size=2)
    for name in ("unet-disc-tiny", "gigagan-tiny", "patchgan-tiny"):
        rt.wrap(create_model(name))
    rt.wrap(create_autoencoder(TINY_AE))
    assert [kw["forward_sync_buffers"] for kw in made] == [False, False, True, False]


def test_nonfinite_discriminator_loss_skips_its_step_on_the_device_and_is_read_with_the_next_step(monkeypatch):
    cfg, state = _state("unet-disc-tiny", 64)
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    loss_fn = GeneratorLoss(cfg.loss, cfg.discriminator.loss)
    real_loss = step.discriminator_loss
    monkeypatch.setattr(step, "discriminator_loss", lambda *a: (lambda l, t: (l * float("nan"), t))(*real_loss(*a)))
    d_before = [p.detach().clone() for p in state.disc.parameters()]
    g_before = [p.detach().clone() for p in state.model.parameters()]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    first = loop.train_step(rt, cfg, state, loss_fn, [x])
    assert not first.nonfinite and state.step == 1 and first.d_nonfinite
    assert all(torch.equal(a, b) for a, b in zip(d_before, state.disc.parameters()))
    assert all(s["step"].item() == 0 for s in state.opt_d.state.values())  # Adam's step count untouched
    assert any(not torch.equal(a, b) for a, b in zip(g_before, state.model.parameters()))  # G stepped
    second = loop.train_step(rt, cfg, state, loss_fn, [x], prev_d_flag=first.d_flag)
    assert second.prev_d_nonfinite and state.step == 2


def test_a_run_of_nonfinite_discriminator_losses_still_stops_the_run(monkeypatch, tmp_path):
    cfg = config_from_dict(merged_preset({"discriminator": {"name": "patchgan-tiny", "start_step": 0},
                                          "train": {"steps": 20, "max_nonfinite": 3}, "log": {"every": 1000}}))
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    state = build_train_state(rt, cfg)
    real_loss = step.discriminator_loss
    monkeypatch.setattr(step, "discriminator_loss", lambda *a: (lambda l, t: (l * float("nan"), t))(*real_loss(*a)))
    batches = iter(lambda: {"images": torch.rand(2, 3, 32, 32) * 2 - 1, "skipped": 0, "failed": []}, None)
    from litevae_cli.jobs.stopping import StopSignal

    with StopSignal() as signals, pytest.raises(UserError, match="3 consecutive steps had a non-finite loss"):
        loop.fit(rt, cfg, state, batches, GeneratorLoss(cfg.loss, cfg.discriminator.loss), tmp_path, signals)
    # Read one step late: the third skipped discriminator step is known with step 4's flags (a log or
    # checkpoint step reads it at once: with log.every 1 the run stops after step 3, as before).
    assert state.step == 4 and state.nonfinite_total == 3


def test_fused_adam_skip_on_the_device():
    p = torch.nn.Parameter(torch.randn(4))
    opt = make_adam(Runtime(torch.device("cpu"), "fp32"), [p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    p.grad = torch.ones(4)
    before = p.detach().clone()
    step_unless(opt, scaler, torch.ones(()))
    assert opt.defaults["fused"] and torch.equal(p.detach(), before) and opt.state[p]["step"].item() == 0
    step_unless(opt, scaler, torch.zeros(()))
    assert not torch.equal(p.detach(), before) and opt.state[p]["step"].item() == 1
    # With loss scaling (fp16) the flag joins the scaler's own inf check: skipped, and the scale lowered.
    scaler, before = torch.amp.GradScaler("cpu", init_scale=1024.0), p.detach().clone()
    opt.zero_grad()
    scaler.scale(p.sum()).backward()
    step_unless(opt, scaler, torch.ones(()))
    scaler.update()
    assert torch.equal(p.detach(), before) and scaler.get_scale() == 512.0
    opt.zero_grad()
    scaler.scale(p.sum()).backward()
    step_unless(opt, scaler, torch.zeros(()))
    scaler.update()
    torch.testing.assert_close(p.detach(), before - 0.1)  # unscaled: Adam's first step is lr * sign(grad)


# ------------------------------------------------------------------------------- EMA, kernels, checkpoints
def test_foreach_ema_equals_the_per_parameter_lerp():
    model = create_autoencoder(TINY_AE)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    reference = copy.deepcopy(ema)
    decay = update_ema(ema, model, 0.99, 5, True)
    with torch.no_grad():
        for e, p in zip(reference.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), reference.parameters()))


def test_blur_kernels_are_built_once_per_device_and_dtype():
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    gaussian_loss(x, y)
    kernels = _blur_kernels(5, 1.0, 3, x.device, torch.float32)
    gaussian_loss(x, y)
    assert _blur_kernels(5, 1.0, 3, x.device, torch.float32) is kernels
    assert _blur_kernels(5, 1.0, 3, x.device, torch.float64)[0].dtype == torch.float64


def test_checkpoint_tensors_reach_the_host_in_one_go_and_finiteness_is_one_read():
    cl = torch.rand(2, 3, 4, 4).to(memory_format=torch.channels_last)
    tree = {"a": cl, "b": [torch.ones(2), (torch.zeros(1), 3)], "c": "text"}
    out = host_copy(tree)
    assert out["a"] is cl and out["b"][1][1] == 3 and isinstance(out["b"][1], tuple) and out["c"] == "text"
    model = torch.nn.Linear(3, 2)
    assert all_finite(model)
    with torch.no_grad():
        model.weight[0, 1] = float("inf")
    assert not all_finite(model)


# ------------------------------------------------------------------------------- LPIPS precision
def test_lpips_precision_setting():
    assert resolve_lpips_precision("auto", "bf16") == "bf16" and resolve_lpips_precision("auto", "fp32") == "fp32"
    assert resolve_lpips_precision("auto", "fp16") == "fp32" and resolve_lpips_precision("bf16", "fp32") == "bf16"
    with pytest.raises(UserError, match="lpips_precision"):
        resolve_lpips_precision("fp8", "bf16")


def test_lpips_bf16_stays_within_the_stated_tolerance_of_fp32():
    """The measurement behind LPIPS_BF16_RTOL/ATOL (training.losses), on a random-init backbone."""
    from litevae_cli.metrics.weights import build_lpips

    torch.manual_seed(0)
    net = build_lpips("alex", random_backbone=True)
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8, generator=g), size=64, mode="bilinear") * 2 - 1
    for noise in (0.02, 0.1, 0.4):
        y = (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        with torch.no_grad():
            fp32, bf16 = net(x, y).flatten(), lpips_bf16(net, x, y).flatten()
        assert bf16.dtype == torch.float32
        assert ((bf16 - fp32).abs() <= LPIPS_BF16_RTOL * fp32 + LPIPS_BF16_ATOL).all(), (noise, fp32, bf16)
    loss_cfg = config_from_dict(merged_preset({"loss": {"lpips": 1.0, "lpips_precision": "auto"}})).loss
    loss = GeneratorLoss(loss_cfg, lpips_random_backbone=True, run_precision="bf16")
    assert loss.lpips_precision == "bf16"


@pytest.mark.slow
def test_two_ranks_without_buffer_broadcast_keep_identical_spectral_norm_vectors(tmp_path):
    """broadcast_buffers=False for a spectral-norm discriminator on one concatenated call per step: after a
    2-rank torchrun (gloo) every rank holds the same weights AND the same u, v (runtime.wrap's comment)."""
    import os
    import subprocess
    import sys

    import numpy as np
    import yaml
    from PIL import Image

    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(merged_preset({
        "discriminator": {"name": "unet-disc-tiny", "start_step": 0}, "data": {"resolution": 64},
        "train": {"steps": 2, "batch_size": 4}, "log": {"every": 2, "checkpoint_every": 2}})))
    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (72, 72, 3), dtype=np.uint8)).save(data / f"{i}.png")
    dump = tmp_path / "dump"
    env = {**os.environ, "LITEVAE_TEST_RANK_DUMP": str(dump), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "litevae_cli",
           "pretrain", "--preset", str(preset), "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(dump / f"rank{r}.pt", weights_only=True)["discriminator"] for r in (0, 1))
    vectors = [k for k in r0 if k.endswith(("._u", "._v"))]
    assert len(vectors) == 2 * sum(1 for k in r0 if k.endswith(".original"))  # every spectral norm's u and v
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)


def test_under_torchrun_a_stop_reaches_every_rank_through_the_next_steps_flags(tmp_path):
    """A signal is no separate collective per step any more: the rank that got it says so in the next step's
    flags, that step completes on every rank and the run stops, last.pt at that step. (One process with a
    world size of 2: the collectives are identities without a process group.)"""
    import dataclasses
    import os
    import signal

    from litevae_cli.files.checkpoint import load_checkpoint
    from litevae_cli.jobs.stopping import StopSignal

    cfg = config_from_dict(merged_preset({"train": {"steps": 10}, "log": {"every": 1000}}))
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    state = build_train_state(rt, cfg)

    def batches():
        for i in range(10):
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives after step 2, while the third batch is fetched
            yield {"images": torch.rand(2, 3, 32, 32) * 2 - 1, "skipped": 0, "failed": []}

    with StopSignal() as signals:
        code = loop.fit(dataclasses.replace(rt, world_size=2), cfg, state, batches(),
                        GeneratorLoss(cfg.loss, cfg.discriminator.loss), tmp_path, signals)
    assert code == 128 + signal.SIGTERM and state.step == 3
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3
