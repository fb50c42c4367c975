"""The training loop on CPU with tiny models at 32 px: losses fall, resume is bit-identical, NaN handling.

Every run uses litevae-tiny + smc-decoder-tiny (and patchgan-tiny / unet-disc-tiny for the
discriminator), fp32, workers 0 and LPIPS weight 0 (no backbone weights offline).
"""

import json
import math

import numpy as np
import pytest
import torch
from conftest import merged_preset
from conftest import write_preset as conftest_write_preset
from PIL import Image

from litevae_cli.files.checkpoint import load_checkpoint
from litevae_cli.config import config_from_dict
from litevae_cli.errors import UserError
from litevae_cli.training.losses import GeneratorLoss
from litevae_cli.runtime import setup_runtime
from litevae_cli.training.loop import train, train_step
from litevae_cli.training.state import build_train_state, capture_rng, restore_rng

# TINY_PRESET (conftest) as these tests train it: 6 steps, a sample grid and a checkpoint every 3.
TINY = {"train": {"steps": 6, "seed": 0}, "log": {"sample_every": 3, "checkpoint_every": 3}}


def tiny_cfg(**sections):
    return merged_preset(TINY, sections)


def write_preset(tmp_path, name="tiny.yaml", **sections):
    return conftest_write_preset(tmp_path / name, TINY, sections)


def image_folder(tmp_path, n=4, size=40):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        yy, xx = np.mgrid[0:size, 0:size] / size
        img = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy) * (i + 1))], -1)
        img = (img + 1) * 127.5 + rng.normal(0, 8, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return str(folder)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest single-threaded, and the test machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fixed_batch(size=32):
    """Two smooth images (bilinear blow-ups of 2x2 noise): a tiny model can fit them in a few steps."""
    torch.manual_seed(123)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 2, 2), size=size, mode="bilinear", align_corners=False)
    return x * 2 - 1


def _run_steps(cfg, n, x):
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    loss_fn = GeneratorLoss(cfg.loss, cfg.discriminator.loss)
    torch.manual_seed(0)
    state = build_train_state(rt, cfg)
    results = [train_step(rt, cfg, state, loss_fn, [x]) for _ in range(n)]
    return state, results


def test_pretrain_steps_reduce_reconstruction_loss_on_a_fixed_batch():
    cfg = config_from_dict(tiny_cfg(optim={"lr": 1e-3}, train={"ema_decay": 0.99}))
    state, results = _run_steps(cfg, 12, _fixed_batch())
    l1 = [float(r.g_terms[0]["l1"]) for r in results]
    assert all(not r.nonfinite for r in results) and state.step == 12
    assert np.mean(l1[-3:]) < 0.85 * np.mean(l1[:3]), l1
    # The EMA moved away from its start and towards the model.
    ema_p, p = next(iter(state.ema.parameters())), next(iter(state.model.parameters()))
    assert torch.isfinite(ema_p).all() and not torch.equal(ema_p, p)


@pytest.mark.parametrize("disc,size", [("patchgan-tiny", 32), ("unet-disc-tiny", 64)])
def test_finetune_steps_train_generator_and_discriminator(disc, size):
    cfg = config_from_dict(tiny_cfg(phase="finetune", optim={"lr": 1e-3}, data={"resolution": size},
                                    discriminator={"name": disc, "start_step": 1}))
    x = _fixed_batch(size)
    state, results = _run_steps(cfg, 1, x)
    assert results[0].d_terms == []  # before start_step: no discriminator step, no adversarial term
    d_before = [p.detach().clone() for p in state.disc.parameters()]
    loss_fn = GeneratorLoss(cfg.loss, cfg.discriminator.loss)
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    more = [train_step(rt, cfg, state, loss_fn, [x]) for _ in range(8)]
    assert all(r.d_terms and math.isfinite(float(r.d_terms[0]["total"])) for r in more)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, state.disc.parameters()))
    l1 = [float(r.g_terms[0]["l1"]) for r in results + more]
    assert np.mean(l1[-3:]) < np.mean(l1[:3]), l1


def test_nonfinite_loss_skips_the_step_without_touching_weights():
    cfg = config_from_dict(tiny_cfg())
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    base = GeneratorLoss(cfg.loss, cfg.discriminator.loss)

    def nan_loss(*args, **kwargs):
        total, terms = base(*args, **kwargs)
        return total * float("nan"), terms

    state = build_train_state(rt, cfg)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    result = train_step(rt, cfg, state, nan_loss, [_fixed_batch()])
    assert result.nonfinite and state.step == 0
    assert all(torch.equal(before[k], v) for k, v in state.model.state_dict().items())
    assert all(p.grad is None for p in state.model.parameters())


def test_rng_capture_round_trips_through_weights_only_load(tmp_path):
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    """6 steps straight vs 3 steps, stop, rerun to 6: same weights, EMA, discriminator and optimizers."""
    preset = write_preset(tmp_path, train={"ema_decay": 0.9}, discriminator={"name": "patchgan-tiny"})
    data = image_folder(tmp_path)
    assert train("pretrain", preset, data, tmp_path / "straight", device="cpu") == 0
    assert train("pretrain", preset, data, tmp_path / "resumed", device="cpu", steps=3) == 0
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 3
    assert train("pretrain", preset, data, tmp_path / "resumed", device="cpu") == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6 and a["data_position"] == b["data_position"]
    for key in ("model", "ema", "discriminator"):
        assert _states_equal(a[key], b[key]), key
    assert _states_equal(a["optimizer_g"]["state"][0], b["optimizer_g"]["state"][0])
    # The run directory holds what the loop promises.
    run = tmp_path / "resumed"
    assert (run / "checkpoints" / "step-0000003.pt").is_file() and (run / "checkpoints" / "step-0000006.pt").is_file()
    assert (run / "samples" / "step-0000006.png").is_file() and (run / "config.yaml").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"g/l1", "g/total", "d/total", "img_per_s", "skipped_images", "nonfinite_steps", "lr"} <= set(record)


def test_resume_refuses_a_different_model(tmp_path):
    data = image_folder(tmp_path)
    assert train("pretrain", write_preset(tmp_path), data, tmp_path / "run", device="cpu", steps=1) == 0
    with pytest.raises(UserError, match="differs"):
        train("pretrain", write_preset(tmp_path, model={"nz": 8}), data, tmp_path / "run", device="cpu", steps=2)


def test_finetune_from_loads_ema_weights_and_checks_the_model(tmp_path, capsys):
    data = image_folder(tmp_path)
    a = write_preset(tmp_path, train={"ema_decay": 0.5, "steps": 2})
    assert train("pretrain", a, data, tmp_path / "a", device="cpu") == 0
    ckpt_a = tmp_path / "a" / "checkpoints" / "last.pt"
    ft = write_preset(tmp_path, "ft.yaml", phase="finetune", train={"steps": 1, },
                      discriminator={"name": "patchgan-tiny"})
    with pytest.raises(UserError, match="--from"):
        train("finetune", ft, data, tmp_path / "b", device="cpu")
    with pytest.raises(UserError, match="finetune --from"):
        train("pretrain", ft, data, tmp_path / "b", device="cpu")
    bad = write_preset(tmp_path, "bad.yaml", phase="finetune", model={"nz": 8})
    with pytest.raises(UserError, match="preset wants"):
        train("finetune", bad, data, tmp_path / "c", device="cpu", init_from=ckpt_a)
    assert train("finetune", ft, data, tmp_path / "b", device="cpu", init_from=ckpt_a, steps=1) == 0
    assert "EMA weights" in capsys.readouterr().out
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert b["step"] == 1 and b["discriminator_name"] == "patchgan-tiny" and b["config"]["phase"] == "finetune"
    assert b["optimizer_g"]["state"][0]["step"].item() == 1  # fresh optimizer: one step taken
    # --from also takes a run directory (its last checkpoint), like every MODEL argument
    capsys.readouterr()
    assert train("finetune", ft, data, tmp_path / "d", device="cpu", init_from=tmp_path / "a", steps=1) == 0
    assert "EMA weights" in capsys.readouterr().out
    d = load_checkpoint(tmp_path / "d" / "checkpoints" / "last.pt")
    assert torch.equal(d["model"]["decoder.conv_out.weight"], b["model"]["decoder.conv_out.weight"])  # same start


def test_consecutive_nonfinite_losses_stop_the_run_and_keep_last_checkpoint(tmp_path, monkeypatch):
    data = image_folder(tmp_path)
    preset = write_preset(tmp_path, train={"max_nonfinite": 3})
    assert train("pretrain", preset, data, tmp_path / "run", device="cpu", steps=2) == 0
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    original = GeneratorLoss.forward

    def nan_forward(self, *args, **kwargs):
        total, terms = original(self, *args, **kwargs)
        return total * float("nan"), terms

    monkeypatch.setattr(GeneratorLoss, "forward", nan_forward)
    with pytest.raises(UserError, match="3 consecutive steps had a non-finite loss"):
        train("pretrain", preset, data, tmp_path / "run", device="cpu", steps=10)
    assert last.read_bytes() == before


def test_bf16_autocast_with_channels_last_and_grad_accum():
    """CPU bf16 takes the mixed-precision path (autocast, channels_last); losses stay fp32 and finite."""
    cfg = config_from_dict(tiny_cfg(train={"precision": "bf16", "grad_accum": 2},
                                    discriminator={"name": "patchgan-tiny"}))
    rt = setup_runtime("cpu", "bf16", init_distributed=False)
    state = build_train_state(rt, cfg)
    conv = next(p for p in state.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x = _fixed_batch()
    result = train_step(rt, cfg, state, GeneratorLoss(cfg.loss, cfg.discriminator.loss), [x[:1], x[1:]])
    assert not result.nonfinite and state.step == 1 and len(result.g_terms) == 2 and len(result.d_terms) == 2
    assert all(t["total"].dtype == torch.float32 for t in result.g_terms)
    assert all(p.dtype == torch.float32 for p in state.model.parameters())
