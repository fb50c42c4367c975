"""Import and export of diffusers `AutoencoderKL` folders (issue 21, "Bring your own VAE").

SD-, SDXL-, SD3- and FLUX-shaped configs (the published fields at small widths) with perturbed random
weights: every MODEL loader reads them as the registry's sd-vae-encoder + sd-vae-decoder, whose posterior
and decoding match diffusers' own to 1e-4; `litevae export --format diffusers` writes them back as folders
that plain `AutoencoderKL.from_pretrained` loads with no missing or unexpected keys, same outputs and the
published latent factors; other models stay LiteVAE folders carrying their spec's factors; bad folders
are one-line errors (exit 2) that write nothing.
"""

import inspect
import json
import os
import stat

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.files import autoencoder_kl
from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.cli import app
from litevae_cli.errors import UserError
from litevae_cli.model_spec import ModelSpec
from litevae_cli.models import create_autoencoder

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKL  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def _config(levels, widths, lpb, groups, nz, quant, post_quant, attention, **factors):
    return dict(block_out_channels=widths, down_block_types=["DownEncoderBlock2D"] * levels,
                up_block_types=["UpDecoderBlock2D"] * levels, layers_per_block=lpb, norm_num_groups=groups,
                latent_channels=nz, use_quant_conv=quant, use_post_quant_conv=post_quant,
                mid_block_add_attention=attention, sample_size=64, **factors)


# The published configs' fields (spec notes, "Existing VAEs"), at CPU-test widths.
CONFIGS = {
    "sd": _config(4, [16, 32, 64, 64], 2, 8, 4, True, True, True, scaling_factor=0.18215),
    "sdxl": _config(4, [32, 64, 64, 64], 1, 16, 4, True, True, True, scaling_factor=0.13025, force_upcast=False),
    "sd3": _config(3, [16, 32, 32], 2, 16, 16, False, False, True, scaling_factor=1.5305, shift_factor=0.0609),
    "flux": _config(3, [16, 32, 64], 1, 8, 16, False, False, False, scaling_factor=0.3611, shift_factor=0.1159),
    "mixed": _config(2, [16, 48], 1, 8, 4, True, False, False, scaling_factor=0.5, latents_mean=[0.1, 0.2, 0.3, 0.4],
                     latents_std=[1.0, 2.0, 3.0, 4.0]),
}


def _diffusers_vae(cfg: dict, seed: int = 0) -> AutoencoderKL:
    """AutoencoderKL(**cfg) with every weight perturbed, so norms and biases are not their init values."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**cfg).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (diffusers model, its save_pretrained folder), built once per config."""
    cache = {}

    def get(name):
        if name not in cache:
            vae = _diffusers_vae(CONFIGS[name])
            folder = tmp_path_factory.mktemp(name) / "vae"
            vae.save_pretrained(folder)
            cache[name] = vae, folder
        return cache[name]

    return get


def _max_diffs(ours, theirs, x, z) -> dict:
    with torch.no_grad():
        post, dist = ours.encode(x), theirs.encode(x).latent_dist
        return {"mean": float((post.mean - dist.mean).abs().max()),
                "logvar": float((post.logvar - dist.logvar).abs().max()),
                "decode": float((ours.decode(z) - theirs.decode(z).sample).abs().max())}


def test_defaults_are_diffusers_autoencoder_kl_defaults():
    params = inspect.signature(AutoencoderKL.__init__).parameters
    theirs = {k: (list(p.default) if isinstance(p.default, tuple) else p.default)
              for k, p in params.items() if k != "self"}
    assert theirs == autoencoder_kl.DEFAULTS


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_matches_diffusers(name, saved):
    vae, folder = saved(name)
    cfg = CONFIGS[name]
    for path in (folder, folder / "diffusion_pytorch_model.safetensors"):
        loaded = load_autoencoder(path)
        spec = loaded.spec
        assert (spec.encoder, spec.decoder, spec.nz) == ("sd-vae-encoder", "sd-vae-decoder", cfg["latent_channels"])
        assert loaded.path == folder and not loaded.model.training
    want = {k: cfg.get(k, autoencoder_kl.DEFAULTS[k]) for k in autoencoder_kl.KEPT_KEYS}
    assert spec.latent_factors == want
    assert spec.encoder_kwargs["blocks_per_level"] + 1 == spec.decoder_kwargs["blocks_per_level"] == \
        cfg["layers_per_block"] + 1
    assert set(loaded.model.state_dict()) == set(autoencoder_kl.key_map(spec))
    torch.manual_seed(1)
    scale = 2 ** (len(cfg["block_out_channels"]) - 1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, cfg["latent_channels"], 32 // scale, 32 // scale)
    diffs = _max_diffs(loaded.model, vae, x, z)
    print(name, diffs)  # the measured differences (pytest -s)
    assert max(diffs.values()) <= 1e-4, diffs


def test_logvar_clamp_matches_diffusers(saved):
    vae, folder = saved("sd")
    ours = load_autoencoder(folder).model
    bias = vae.quant_conv.bias.detach().clone()
    with torch.no_grad():
        vae.quant_conv.bias[4:] += 40.0  # push log-variances past diffusers' clamp at 20
        ours.encoder.quant_conv.bias[4:] += 40.0
        x = torch.rand(1, 3, 16, 16) * 2 - 1
        dist, post = vae.encode(x).latent_dist, ours.encode(x)
        vae.quant_conv.bias.copy_(bias)
    assert float(post.logvar.max()) == 20.0 and torch.allclose(post.logvar, dist.logvar, atol=1e-4)


@pytest.mark.parametrize("name", ["sd", "flux", "mixed"])
def test_export_round_trip_through_plain_diffusers(name, saved, tmp_path):
    vae, folder = saved(name)
    out = tmp_path / "out"
    before = os.umask(0o022)
    try:
        res = runner.invoke(app, ["export", str(folder), str(out), "--format", "diffusers"])
    finally:
        os.umask(before)
    assert res.exit_code == 0, res.output
    assert "diffusers AutoencoderKL folder" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in out.iterdir())
    back, info = AutoencoderKL.from_pretrained(out, output_loading_info=True, low_cpu_mem_usage=False)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    public = lambda c: {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()  # noqa: E731
                        if not k.startswith("_")}
    assert public(back.config) == public(vae.config)
    want, got = vae.state_dict(), back.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(back(x).sample, vae(x).sample)


def _checkpoint(spec: ModelSpec, path, resolution=32, seed=0):
    torch.manual_seed(seed)
    ae = create_autoencoder(spec)
    return ae, save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": spec.to_dict(),
                            "model": ae.state_dict(), "ema": None, "step": 3,
                            "config": {"data": {"resolution": resolution}}}, path)


def test_trained_sd_vae_exports_as_autoencoder_kl_and_stats_override(tmp_path):
    kwargs = {"channels": 16, "mults": [1, 2], "norm_groups": 8}
    spec = ModelSpec("sd-vae-encoder", "sd-vae-decoder", 4, {**kwargs, "logvar_init": -6.0},
                     {**kwargs, "blocks_per_level": 3})
    ae, ckpt = _checkpoint(spec, tmp_path / "run" / "checkpoints" / "last.pt")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"nz": 4, "normalization": {"sample": {"scaling_factor": 0.5, "shift_factor": 0.25}}}))
    for args, scale, shift in (([], 1.0, 0.0), (["--stats", str(stats)], 0.5, 0.25)):
        out = tmp_path / f"out{len(args)}"
        res = runner.invoke(app, ["export", str(tmp_path / "run"), str(out), "--format", "diffusers", *args])
        assert res.exit_code == 0, res.output
        back, info = AutoencoderKL.from_pretrained(out, output_loading_info=True, low_cpu_mem_usage=False)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        c = back.config
        assert (c.use_quant_conv, c.use_post_quant_conv, c.layers_per_block, c.sample_size) == (True, False, 2, 32)
        assert (c.scaling_factor, c.shift_factor) == (scale, shift)
        x, z = torch.rand(1, 3, 16, 16) * 2 - 1, torch.randn(1, 4, 8, 8)
        assert max(_max_diffs(ae.eval(), back, x, z).values()) <= 1e-4


def test_other_models_stay_litevae_folders_with_their_factors(tmp_path):
    from litevae_cli.diffusers_vae import LiteVAE

    spec = ModelSpec("litevae-tiny", "smc-decoder-tiny", 4,
                     latent_factors={"scaling_factor": 0.3611, "shift_factor": 0.1159})
    _checkpoint(spec, tmp_path / "m.pt")
    res = runner.invoke(app, ["export", str(tmp_path / "m.pt"), str(tmp_path / "out"), "--format", "diffusers"])
    assert res.exit_code == 0 and "diffusers LiteVAE folder" in res.output, res.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["_class_name"], config["scaling_factor"], config["shift_factor"]) == ("LiteVAE", 0.3611, 0.1159)
    assert LiteVAE.from_pretrained(tmp_path / "out").config.scaling_factor == 0.3611


def test_eval_and_reconstruct_run_on_an_imported_folder(saved, tmp_path):
    _, folder = saved("sdxl")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(24, 24, 3) * 255).byte().numpy()).save(images / f"img{i}.png")
    res = runner.invoke(app, ["eval", str(folder), "--data", str(images), "--metrics", "psnr,ssim",
                              "--resolution", "16", "--device", "cpu", "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert "sd-vae-encoder + sd-vae-decoder" in res.output and json.loads((tmp_path / "e.json").read_text())
    res = runner.invoke(app, ["reconstruct", str(folder), str(images), "--out", str(tmp_path / "rec"),
                              "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "rec" / "img0_recon.png").size == (16, 16)


def _folder(root, config, weights_from=None):
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    if weights_from is not None:
        (root / "diffusion_pytorch_model.safetensors").write_bytes(weights_from.read_bytes())
    return root


def test_bad_folders_are_one_line_errors_that_write_nothing(saved, tmp_path):
    _, folder = saved("flux")
    weights = folder / "diffusion_pytorch_model.safetensors"
    good = json.loads((folder / "config.json").read_text())
    cases = {
        "unet": ({"_class_name": "UNet2DModel", "sample_size": 32}, "describes a UNet2DModel model"),
        "no-weights": (good, "has no diffusion_pytorch_model.safetensors"),
        "shapes": ({**good, "latent_channels": 8}, "do not fit the model: size mismatch"),
        "act": ({**good, "act_fn": "gelu"}, "unsupported act_fn 'gelu'"),
        "blocks": ({**good, "down_block_types": ["AttnDownEncoderBlock2D"] * 3}, "unsupported down_block_types"),
        "rgb": ({**good, "in_channels": 4}, "unsupported in_channels 4"),
        "unknown": ({**good, "foo": 1}, "unsupported AutoencoderKL config key 'foo'"),
        "widths": ({**good, "block_out_channels": [16, 24, 64]}, "not integer multiples of the first"),
        "groups": ({**good, "norm_num_groups": 32}, "norm_num_groups 32 does not divide"),
        "extra": ({**good, "use_quant_conv": True}, "missing 2 tensor(s), e.g. quant_conv.weight"),
    }
    for name, (config, needle) in cases.items():
        bad = _folder(tmp_path / name, config, None if name == "no-weights" else weights)
        out = tmp_path / f"out-{name}"
        res = runner.invoke(app, ["export", str(bad), str(out), "--format", "diffusers"])
        assert res.exit_code == 2 and needle in res.output, (name, res.output)
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
        assert not out.exists()
    res = runner.invoke(app, ["export", "stabilityai/sd-vae-ft-mse", str(tmp_path / "hub"), "--format", "diffusers"])
    assert not (tmp_path / "hub").exists() and res.exit_code == 2 and "huggingface-cli download stabilityai/sd-vae-ft-mse" in res.output, res.output


def test_litevae_loader_names_the_autoencoder_kl_class(saved):
    import litevae_cli

    _, folder = saved("sd")
    for path in (folder, folder / "diffusion_pytorch_model.safetensors"):
        with pytest.raises(UserError, match="is a diffusers AutoencoderKL: load it with diffusers.AutoencoderKL"):
            litevae_cli.load(path)


def test_legacy_attention_names_are_read(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    vae, folder = saved("sd")
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for k, v in state.items():
        for new, old in legacy.items():
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        renamed[k] = v
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((folder / "config.json").read_text())
    save_file(renamed, str(old / "diffusion_pytorch_model.safetensors"))
    a, b = load_autoencoder(old).model.state_dict(), load_autoencoder(folder).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
