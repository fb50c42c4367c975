"""`litevae distill` and `train.trainable`: a student encoder learns a frozen teacher's latent space; a
decoder-only finetune keeps the encoder and every latent bit-identical. Tiny models, 32 px, CPU."""

import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import image_folder, write_preset
from typer.testing import CliRunner

from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.files.checkpoint import load_checkpoint
from litevae_cli.cli import app
from litevae_cli.errors import UserError
from litevae_cli.training.distill import latent_std, logvar_kl, logvar_nll
from litevae_cli.training.loop import train
from litevae_cli.models.posterior import DiagonalGaussian

runner = CliRunner()
TEACHER_FACTORS = {"scaling_factor": 0.5, "shift_factor": 0.1}


def _preset(tmp_path, name, **sections):
    """conftest's TINY_PRESET with an SD-VAE-architecture model carrying published-style latent factors."""
    teacher = {"name": name, "model": {"encoder": "sd-vae-encoder-tiny", "decoder": "sd-vae-decoder-tiny", "nz": 4,
                                       "latent_factors": TEACHER_FACTORS},
               "train": {"steps": 2, "seed": 0}, "log": {"sample_every": 100, "checkpoint_every": 3}}
    return write_preset(tmp_path / f"{name}.yaml", teacher, sections)


def _distill_preset(tmp_path, **sections):
    base = {"phase": "distill", "model": None,
            "distill": {"student": "litevae-tiny", "mean": 1.0, "logvar": 0.1},
            "loss": {"l1": 0.1, "lpips": 0.0, "kl": 0.0, "wavelet": 0.0, "gaussian": 0.0, "adversarial": 0.0},
            "train": {"steps": 6, "batch_size": 2, "precision": "fp32", "seed": 0, "trainable": "encoder",
                      "ema_decay": 0.9}}
    for k, v in sections.items():
        base[k] = {**base[k], **v} if isinstance(base.get(k), dict) else v
    return _preset(tmp_path, "distill-tiny", **base)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, make_images_module):
    """A tiny SD-VAE-architecture teacher trained 2 steps, with published-style latent factors."""
    tmp = tmp_path_factory.mktemp("teacher")
    data = make_images_module(tmp)
    assert train("pretrain", _preset(tmp, "teacher"), str(data), tmp / "teacher", device="cpu") == 0
    return tmp / "teacher", data


@pytest.fixture(scope="module")
def make_images_module():
    return lambda folder, n=4, size=40: image_folder(folder / "images", n, size)


def _equal_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_distill_trains_the_student_into_the_teachers_latent_space(teacher, tmp_path):
    run, data = teacher
    preset = _distill_preset(tmp_path)
    assert train("distill", preset, str(data), tmp_path / "d", device="cpu", teacher=str(run)) == 0
    ckpt = load_checkpoint(tmp_path / "d" / "checkpoints" / "last.pt")
    spec = ckpt["model_spec"]
    assert (spec["encoder"], spec["decoder"], spec["nz"]) == ("litevae-tiny", "sd-vae-decoder-tiny", 4)
    assert spec["latent_factors"] == TEACHER_FACTORS  # the teacher's normalisation travels with the model
    t = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    for weights in (ckpt["model"], ckpt["ema"]):  # the teacher's decoder, frozen: bit-identical
        dec = {k: v for k, v in weights.items() if k.startswith("decoder.")}
        assert dec and _equal_states(dec, {k: t[k] for k in dec})
    # only the student's parameters are in the optimizer
    n_student = sum(1 for k in ckpt["model"] if k.startswith("encoder."))
    assert len(ckpt["optimizer_g"]["param_groups"][0]["params"]) <= n_student
    metrics = [yaml.safe_load(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["g/latent_mean"] > 0 and "g/latent_logvar" in m for m in metrics)
    # every MODEL command takes the result
    loaded = load_autoencoder(tmp_path / "d")
    assert loaded.spec.latent_factors == TEACHER_FACTORS
    result = runner.invoke(app, ["eval", str(tmp_path / "d"), "--data", str(data), "--metrics", "psnr,ssim",
                                 "--resolution", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["encode-dataset", str(tmp_path / "d"), "--data", str(data), "--resolution", "32",
                                 "--out", str(tmp_path / "latents"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "latents" / "stats.json").read_text())["nz"] == 4  # the teacher's channels
    image = next(data.glob("*.png"))
    result = runner.invoke(app, ["reconstruct", str(tmp_path / "d"), str(image), "--resolution", "32",
                                 "--out", str(tmp_path / "rec"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "rec").glob("*.png"))


def test_distill_latent_loss_falls_on_a_fixed_batch(teacher):
    """The mean term against the frozen teacher falls when the student trains on one batch."""
    from litevae_cli.config import resolve_config
    from litevae_cli.runtime import setup_runtime
    from litevae_cli.training.distill import DistillLoss, distill_spec, init_from_teacher, load_teacher
    from litevae_cli.training.loop import train_step
    from litevae_cli.training.state import build_train_state
    import dataclasses

    run, _ = teacher
    cfg = resolve_config(_distill_preset(run.parent, optim={"lr": 3e-3}), ["loss.l1=0"], {"--teacher": str(run)})
    t = load_teacher(cfg)
    cfg = dataclasses.replace(cfg, model=distill_spec(cfg, t))
    rt = setup_runtime("cpu", "fp32")
    torch.manual_seed(0)
    state = build_train_state(rt, cfg)
    init_from_teacher(state.model, state.ema, t)
    loss_fn = DistillLoss(cfg, t.loaded.model.encoder, t.loaded.spec)
    assert not loss_fn.needs_reconstruction  # no reconstruction weight: the decoder does not run
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    first = train_step(rt, cfg, state, loss_fn, [x]).g_terms[0]["latent_mean"].item()
    for _ in range(30):
        last = train_step(rt, cfg, state, loss_fn, [x]).g_terms[0]["latent_mean"].item()
    assert last < 0.5 * first


def test_latent_terms_match_their_formulas():
    spec = type("S", (), {"nz": 2, "latent_factors": {"scaling_factor": 0.25}})()
    assert torch.equal(latent_std(spec), torch.tensor([4.0, 4.0]))
    spec.latent_factors = {"latents_std": [2.0, 3.0], "scaling_factor": 0.25}
    assert torch.equal(latent_std(spec), torch.tensor([2.0, 3.0]))
    ls, lt = torch.tensor([0.3, -1.0]), torch.tensor([-0.5, -1.0])
    vs, vt = ls.exp(), lt.exp()
    want = torch.log(vs.sqrt() / vt.sqrt()) + vt / (2 * vs) - 0.5  # KL(N(0,vt) || N(0,vs))
    assert torch.allclose(logvar_kl(ls, lt), want, atol=1e-6) and logvar_kl(lt, lt).abs().max() == 0
    # the NLL term's gradient vanishes where var_s equals var_t + (mu_t - mu_s)^2, in expectation
    torch.manual_seed(0)
    t = DiagonalGaussian(torch.cat([torch.zeros(1, 1, 200, 200), torch.full((1, 1, 200, 200), -2.0)], 1))
    logvar = torch.full((1, 1, 200, 200), -2.0, requires_grad=True)
    logvar_nll(DiagonalGaussian(torch.cat([torch.zeros(1, 1, 200, 200), logvar], 1)), t).mean().backward()
    assert abs(logvar.grad.sum().item()) < 0.02


def test_distill_resumes_bit_exact_after_kill_9(teacher, tmp_path):
    """Killed (SIGKILL, mid-step 5, after the step-3 checkpoint), rerun to 6 == 6 steps straight."""
    run, data = teacher
    preset = _distill_preset(tmp_path)
    assert train("distill", preset, str(data), tmp_path / "straight", device="cpu", teacher=str(run)) == 0
    script = (
        "import os, signal, sys\n"
        "import litevae_cli.training.loop as loop\n"
        "step = loop.train_step\n"
        "def killing(rt, cfg, state, *a, **k):\n"
        "    if state.step == 4: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return step(rt, cfg, state, *a, **k)\n"
        "loop.train_step = killing\n"
        f"sys.exit(loop.train('distill', {preset!r}, {str(data)!r}, {str(tmp_path / 'resumed')!r}, device='cpu', "
        f"teacher={str(run)!r}))\n")
    # the same thread count as this process (a different one sums in another order: not bit-identical)
    proc = subprocess.run([sys.executable, "-c", f"import torch; torch.set_num_threads({torch.get_num_threads()})\n"
                           + script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 3
    assert train("distill", preset, str(data), tmp_path / "resumed", device="cpu", teacher=str(run)) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        assert _equal_states(a[key], b[key]), key
    assert _equal_states(a["optimizer_g"]["state"][0], b["optimizer_g"]["state"][0])


def test_decoder_only_finetune_keeps_encoder_and_latents_bit_identical(teacher, tmp_path):
    run, data = teacher
    ft = _preset(tmp_path, "dec-ft", phase="finetune", model=None,
                 train={"steps": 3, "trainable": "decoder", "ema_decay": 0.9},
                 discriminator={"name": "patchgan-tiny"})
    assert train("finetune", ft, str(data), tmp_path / "ft", device="cpu", init_from=str(run)) == 0
    before = load_autoencoder(run)
    for use_ema in (True, False):
        after = load_autoencoder(tmp_path / "ft", use_ema=use_ema)
        assert after.spec == before.spec  # the model of --from (model: null), latent factors included
        enc_a, enc_b = before.model.encoder.state_dict(), after.model.encoder.state_dict()
        assert _equal_states(enc_a, enc_b)
        assert not _equal_states(before.model.decoder.state_dict(), after.model.decoder.state_dict())
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        with torch.no_grad():
            assert torch.equal(before.model.encode(x).moments, after.model.encode(x).moments)
    # --train decoder on the CLI sets the same key; --train encoder outside distill is allowed, junk is not
    result = runner.invoke(app, ["finetune", "--preset", ft, "--from", str(run), "--data", str(data), "--out",
                                 str(tmp_path / "x"), "--train", "nonsense", "--dry-run"])
    assert result.exit_code == 2 and "train.trainable" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_decoder_finetune_of_a_preset_model_with_the_cli_flag(tmp_path, make_images_module):
    data = make_images_module(tmp_path)
    a = _preset(tmp_path, "a", model={"encoder": "litevae-tiny", "decoder": "smc-decoder-tiny", "nz": 4})
    assert train("pretrain", a, str(data), tmp_path / "a", device="cpu") == 0
    ft = _preset(tmp_path, "ft", phase="finetune",
                 model={"encoder": "litevae-tiny", "decoder": "smc-decoder-tiny", "nz": 4}, train={"steps": 2})
    result = runner.invoke(app, ["finetune", "--preset", ft, "--from", str(tmp_path / "a"), "--data", str(data),
                                 "--out", str(tmp_path / "b"), "--train", "decoder", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    a_w, b_w = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["model"] for r in ("a", "b"))
    assert all(torch.equal(a_w[k], b_w[k]) for k in a_w if k.startswith("encoder."))
    assert any(not torch.equal(a_w[k], b_w[k]) for k in a_w if k.startswith("decoder."))


@pytest.mark.parametrize("case", ["student_channels", "teacher_not_a_model", "no_teacher", "student_unknown"])
def test_bad_distill_input_is_one_line_and_writes_nothing(case, teacher, tmp_path, make_images_module):
    run, data = teacher
    args = ["distill", "--teacher", str(run), "--data", str(data), "--out", str(tmp_path / "out"),
            "--preset", _distill_preset(tmp_path), "--device", "cpu"]
    if case == "student_channels":  # a 16-channel student for a 4-channel teacher (a FLUX-shaped mismatch)
        s = _preset(tmp_path, "s16", model={"encoder": "litevae-tiny", "decoder": "smc-decoder-tiny", "nz": 16})
        assert train("pretrain", s, str(data), tmp_path / "s16", device="cpu", steps=1) == 0
        args += ["--student", str(tmp_path / "s16")]
        expect = "16 latent channels"
    elif case == "teacher_not_a_model":
        (tmp_path / "notes.txt").write_text("hello")
        args[2] = str(tmp_path / "notes.txt")
        expect = "notes.txt"
    elif case == "no_teacher":
        args[2] = str(tmp_path / "missing")
        expect = "not found"
    else:
        args += ["--student", "no-such-encoder"]
        expect = "neither a registered encoder"
    result = runner.invoke(app, args)
    text = result.output.strip()
    assert result.exit_code == 2 and "Traceback" not in result.output and len(text.splitlines()) == 1, text
    assert expect in text
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_distill_under_torchrun_two_ranks_end_identical(tmp_path, tiny_ckpt, make_images_module):
    """DDP with a frozen decoder and a frozen teacher outside the wrapper: both ranks end equal."""
    data = make_images_module(tmp_path, n=6)
    preset = _distill_preset(tmp_path, train={"steps": 2, "batch_size": 4})
    out, dump = tmp_path / "run", tmp_path / "dump"
    env = {**os.environ, "LITEVAE_TEST_RANK_DUMP": str(dump), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "litevae_cli", "distill", "--teacher", tiny_ckpt, "--preset", preset, "--data", str(data),
           "--out", str(out), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 ranks" in proc.stdout
    r0, r1 = (torch.load(dump / f"rank{r}.pt", weights_only=True)["model"] for r in (0, 1))
    assert _equal_states(r0, r1)
    teacher = torch.load(tiny_ckpt, weights_only=True)["model"]
    assert all(torch.equal(r0[k], teacher[k]) for k in r0 if k.startswith("decoder."))
    assert any(not torch.equal(r0[k], teacher[k]) for k in r0 if k.startswith("encoder."))


def test_no_ema_takes_the_teachers_raw_weights(teacher, tmp_path):
    """--no-ema (use_ema=False): the decoder copied from a teacher with EMA weights is its raw one."""
    run, data = teacher
    ema_teacher = _preset(tmp_path, "t-ema", train={"steps": 2, "ema_decay": 0.5})
    assert train("pretrain", ema_teacher, str(data), tmp_path / "t", device="cpu") == 0
    t = load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")
    for use_ema, source in ((True, "ema"), (False, "model")):
        out = tmp_path / f"d-{source}"
        assert train("distill", _distill_preset(tmp_path, train={"steps": 1}), str(data), out, device="cpu",
                     teacher=str(tmp_path / "t"), use_ema=use_ema) == 0
        d = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
        assert all(torch.equal(d[k], t[source][k]) for k in d if k.startswith("decoder."))
    assert any(not torch.equal(t["ema"][k], t["model"][k]) for k in t["model"] if k.startswith("decoder."))
