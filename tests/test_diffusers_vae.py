"""The diffusers `LiteVAE` (issue 13): a real DiT pipeline and a diffusers-style training step run with it,
save/load is bit-identical, its latent_dist is diffusers' distribution of our posterior, tiled decoding
has no seams, and exports (file or diffusers folder) load everywhere a MODEL is taken, finetune --from too.

Tiny models on CPU: litevae-tiny + smc-decoder-tiny (nz 4), a one-layer DiT and a two-level UNet2DModel.
"""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import litevae_cli
from litevae_cli.inference import tiling
from litevae_cli.files.export import export_model
from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.files.checkpoint import load_checkpoint
from litevae_cli.cli import app
from litevae_cli.models.posterior import DiagonalGaussian

diffusers = pytest.importorskip("diffusers")  # a core dependency: skipped only in a broken install
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae(tiny_ckpt):
    return litevae_cli.load(tiny_ckpt)


def _state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_import_litevae_cli_imports_neither_torch_nor_diffusers():
    code = "import sys, litevae_cli; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False", "False"], out.stderr[-2000:]
    from litevae_cli.diffusers_vae import LiteVAE, load

    assert (litevae_cli.LiteVAE, litevae_cli.load) == (LiteVAE, load)  # resolved lazily on first use


def test_config_and_interface(vae, tiny_ckpt):
    c = vae.config
    assert (c.encoder_type, c.decoder_type, c.latent_channels) == ("litevae-tiny", "smc-decoder-tiny", 4)
    assert len(c.block_out_channels) == 4 and 2 ** (len(c.block_out_channels) - 1) == 8  # diffusers' vae_scale_factor
    assert (c.scaling_factor, c.shift_factor, c.sample_size) == (1.0, 0.0, 256)  # documented defaults, no stats
    assert c.source == {"step": 1, "ema": False} and not vae.training
    ae = load_autoencoder(tiny_ckpt).model
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = vae(x).sample
        ref = ae(x, sample_posterior=False)[0]
        dist = vae.encode(x).latent_dist
        z = dist.sample(generator=torch.Generator().manual_seed(0))
        assert torch.equal(vae.decode(z).sample, ae.decode(z))
        assert torch.equal(vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(0)).sample,
                           ae.decode(z))
    assert out.shape == (2, 3, 32, 32) and torch.equal(out, ref)
    assert isinstance(dist, DiagonalGaussianDistribution) and dist.mean.shape == (2, 4, 4, 4)
    assert torch.equal(dist.parameters, ae.encode(x).moments.detach())


def test_latent_dist_matches_diffusers_distribution_and_ours():
    torch.manual_seed(0)
    moments = torch.randn(2, 8, 5, 5) * 3  # log-variances beyond the clamp too
    moments[0, 4:, 0, 0] = 40.0
    ours, theirs = DiagonalGaussian(moments), DiagonalGaussianDistribution(moments)
    for name in ("mean", "std", "var", "logvar"):
        assert torch.allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-6, atol=0), name
    assert torch.equal(ours.mode(), theirs.mode())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.allclose(ours.sample(g1), theirs.sample(g2), rtol=1e-6, atol=1e-6)
    # diffusers' kl() sums over (C, H, W); ours is per element (the training loss averages it)
    assert torch.allclose(ours.kl().sum(dim=(1, 2, 3)), theirs.kl(), rtol=1e-5)


def test_save_pretrained_round_trip_is_bit_identical(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    files = sorted(p.name for p in (tmp_path / "vae").iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors"]
    back = litevae_cli.LiteVAE.from_pretrained(tmp_path / "vae")
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert _state_equal(vae, back) and public(back.config) == public(vae.config)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae(x).sample, back(x).sample)
    # the CLI's MODEL loader reads the same folder without diffusers, as it reads the folder's weights file
    for path in (tmp_path / "vae", tmp_path / "vae" / "diffusion_pytorch_model.safetensors"):
        assert _state_equal(load_autoencoder(path).model, vae)


def test_from_pretrained_takes_every_model_path_and_prefers_ema(tmp_path):
    from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
    from litevae_cli.models import build_autoencoder

    torch.manual_seed(0)
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    ema = {k: v + 1.0 for k, v in ae.state_dict().items()}
    ckpt = save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(),
                        "model": ae.state_dict(), "ema": ema, "step": 9, "config": {"data": {"resolution": 64}}},
                       tmp_path / "run" / "checkpoints" / "last.pt")
    export = export_model(ckpt, tmp_path / "m.safetensors")
    from_run, from_ckpt = litevae_cli.load(tmp_path / "run"), litevae_cli.LiteVAE.from_pretrained(ckpt)
    assert from_run.config.sample_size == 64 and from_run.config.source == {"step": 9, "ema": True}
    assert all(torch.equal(v, ema[k]) for k, v in from_run.state_dict().items())
    for other in (from_ckpt, litevae_cli.load(export)):
        assert _state_equal(other, from_run)
    raw = litevae_cli.load(ckpt, use_ema=False)
    assert all(torch.equal(v, ae.state_dict()[k]) for k, v in raw.state_dict().items())


def test_dit_pipeline_generates_64px_images(vae, tmp_path):
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    nz = vae.config.latent_channels
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=nz, out_channels=nz,
                                        num_layers=1, sample_size=8, patch_size=2, norm_num_groups=4)
    vae.register_to_config(scaling_factor=0.5)
    seen = []
    decode = vae.decode

    def spy(z, *args, **kwargs):
        seen.append(z.clone())
        return decode(z, *args, **kwargs)

    vae.decode = spy
    try:
        pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
        images = pipe(class_labels=[1, 2], num_inference_steps=2, guidance_scale=1.0, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
        assert images.shape == (2, 64, 64, 3) and images.min() >= 0 and images.max() <= 1 and images.std() > 0
        assert len(seen) == 1 and seen[0].shape == (2, nz, 8, 8)
        with torch.no_grad():
            want = (vae.decode(seen[0]).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        assert abs(images - want).max() < 1e-6
        # the pipeline saves and loads back with our model in it (diffusers imports it from litevae_cli)
        pipe.save_pretrained(tmp_path / "pipe")
        model_index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
        assert model_index["vae"] == ["litevae_cli.diffusers_vae", "LiteVAE"]
        back = DiTPipeline.from_pretrained(tmp_path / "pipe")
        assert isinstance(back.vae, litevae_cli.LiteVAE) and back.vae.config.scaling_factor == 0.5
    finally:
        del vae.decode
        vae.register_to_config(scaling_factor=1.0)


def test_training_step_in_the_style_of_train_text_to_image(vae):
    """encode -> latent_dist.sample() * scaling_factor -> add noise -> UNet -> MSE -> one optimizer step."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    nz = vae.config.latent_channels
    unet = UNet2DModel(sample_size=8, in_channels=nz, out_channels=nz, layers_per_block=1, block_out_channels=(16, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    vae.requires_grad_(False)
    before_vae = {k: v.clone() for k, v in vae.state_dict().items()}
    before_unet = [p.detach().clone() for p in unet.parameters()]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    pixel_values = torch.rand(2, 3, 64, 64) * 2 - 1
    latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],))
    noisy = scheduler.add_noise(latents, noise, timesteps)
    loss = F.mse_loss(unet(noisy, timesteps).sample.float(), noise.float())
    loss.backward()
    optimizer.step()
    assert latents.shape == (2, nz, 8, 8) and torch.isfinite(loss)
    assert all(p.grad is not None for p in unet.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before_unet, unet.parameters()))
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in before_vae.items())


def _seam_scores(y, ref, edges):
    """Mean |jump| of the error (y - ref) across each tile-edge column, in units of ref's mean column step."""
    err = y - ref
    step = (ref[..., 1:] - ref[..., :-1]).abs().mean()
    return [float((err[..., c] - err[..., c - 1]).abs().mean() / step) for c in edges]


def test_tiled_decode_matches_untiled_inside_and_has_no_seams(vae, monkeypatch):
    torch.manual_seed(0)
    z = torch.randn(1, 4, 24, 56)  # 192 x 448 px: one row of two 256 px tiles overlapping by 64 px
    with torch.no_grad():
        vae.disable_tiling()
        ref = vae.decode(z).sample
        vae.enable_tiling(256, 64)
        tiled = vae.decode(z).sample
        monkeypatch.setattr(tiling, "blend_ramp", lambda length, start, total, overlap: torch.ones(length))
        unblended = vae.decode(z).sample
        vae.disable_tiling()
    assert tiling.tile_starts(56, 32, 8) == [0, 24]  # tiles cover px [0, 256) and [192, 448)
    assert tiled.shape == ref.shape == (1, 3, 192, 448)
    # The SMC decoder has no normalisation layer, so away from the other tile's edge a tile is exact.
    assert (tiled - ref)[..., :128].abs().max() < 1e-5 and (tiled - ref)[..., 320:].abs().max() < 1e-5
    assert (tiled - ref).abs().max() < 0.5 * ref.std()
    edges = [192, 256]  # where tile 1 starts and tile 0 ends
    assert max(_seam_scores(tiled, ref, edges)) < 0.3
    assert max(_seam_scores(unblended, ref, edges)) > 0.8  # the same check catches plain averaging


def test_tiled_encode_places_tiles_and_slicing_changes_nothing(vae):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 96, 160) * 2 - 1
    with torch.no_grad():
        ref = vae.encode(x).latent_dist
        vae.enable_slicing()
        sliced = vae.encode(x).latent_dist
        z = ref.mode()
        sliced_images = vae.decode(z).sample
        vae.disable_slicing()
        images = vae.decode(z).sample
        vae.enable_tiling(96, 32)  # width: tiles at px [0, 96) and [64, 160) -> latent columns [0, 12) and [8, 20)
        tiled = vae.encode(x).latent_dist
        vae.disable_tiling()
        left, right = vae.encode(x[..., :96]).latent_dist.mean, vae.encode(x[..., 64:]).latent_dist.mean
    assert torch.allclose(sliced.parameters, ref.parameters, atol=1e-5)
    assert torch.allclose(sliced_images, images, atol=1e-5)
    assert tiled.mean.shape == ref.mean.shape == (3, 4, 12, 20)
    # Where one tile alone covers the latent, it is that crop's encoding (the encoder's GroupNorm sees the
    # tile's statistics, so tiled encoding approximates the untiled one; decoding has no such layer).
    assert torch.allclose(tiled.mean[..., :8], left[..., :8], atol=1e-5)
    assert torch.allclose(tiled.mean[..., 12:], right[..., 4:], atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.enable_tiling(60)
    assert (vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap) == (96, 12, 32)  # unchanged


def test_export_diffusers_folder_with_stats_and_finetune_from_it(tiny_ckpt, tiny_preset, make_images, tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"nz": 4, "scaling_factor": 2.0, "shift_factor": 0.1, "normalization": {
        "sample": {"scaling_factor": 0.8, "shift_factor": 0.1, "channel_scaling_factor": [1] * 4,
                   "channel_shift_factor": [0] * 4}}}))
    runner = CliRunner()
    res = runner.invoke(app, ["export", tiny_ckpt, str(tmp_path / "hf"), "--format", "diffusers",
                              "--stats", str(stats)])
    assert res.exit_code == 0, res.output
    assert "scaling_factor 0.8" in res.output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["_class_name"] == "LiteVAE" and (config["scaling_factor"], config["shift_factor"]) == (0.8, 0.1)
    bad = runner.invoke(app, ["export", tiny_ckpt, str(tmp_path / "x.safetensors"), "--format", "onnx"])
    assert bad.exit_code == 2 and "--format must be one of" in bad.output
    wrong = runner.invoke(app, ["export", tiny_ckpt, str(tmp_path / "y"), "--format", "diffusers", "--stats",
                                str(tmp_path / "nope.json")])
    assert wrong.exit_code == 2 and "no stats.json" in wrong.output
    # finetune --from a diffusers folder and from an export: lr 0 keeps the loaded weights as they are
    from litevae_cli.training.loop import train

    export = export_model(tiny_ckpt, tmp_path / "m.safetensors")
    want = load_checkpoint(tiny_ckpt)["model"]
    for i, source in enumerate((tmp_path / "hf", export)):
        out = tmp_path / f"ft{i}"
        assert train("finetune", tiny_preset(phase="finetune"), str(make_images()), out, init_from=source, steps=1,
                     device="cpu", overrides=["optim.lr=0.0"]) == 0
        got = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_foreign_folders_and_bad_paths_are_one_line_errors(tmp_path, tiny_ckpt):
    from diffusers import AutoencoderKL

    from litevae_cli.errors import UserError

    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4).save_pretrained(tmp_path / "kl")
    with pytest.raises(UserError, match="is a diffusers AutoencoderKL: load it with diffusers.AutoencoderKL"):
        litevae_cli.load(tmp_path / "kl")  # every MODEL argument takes it (tests/test_autoencoder_kl.py)
    with pytest.raises(UserError, match="model not found"):
        litevae_cli.load(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="model not found: runs/nope is no local path"):  # could be a Hub id
        litevae_cli.load("runs/nope", local_files_only=True)  # looked up in the local Hub cache only
    res = CliRunner().invoke(app, ["export", tiny_ckpt, str(tmp_path / "m.safetensors"), "--format", "diffusers"])
    assert res.exit_code == 2 and "writes a folder" in res.output


def test_enable_tiling_leaves_images_up_to_512_px_untouched_like_diffusers(tiny_ckpt, monkeypatch):
    vae = litevae_cli.load(tiny_ckpt)  # a fresh one: the tile sizes persist across enable/disable, as in diffusers
    torch.manual_seed(0)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        vae.disable_tiling()
        ref_z = vae.encode(x).latent_dist.mean
        ref_x = vae.decode(ref_z).sample
        vae.enable_tiling()
        assert (vae.tile_sample_min_size, vae.tile_latent_min_size) == (512, 64)
        calls = []
        real = tiling.tiled_map
        monkeypatch.setattr("litevae_cli.diffusers_vae.tiled_map", lambda *a, **k: calls.append(1) or real(*a, **k))
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
        assert torch.equal(z, ref_z) and torch.equal(y, ref_x) and calls == []
        vae.tile_sample_min_size, vae.tile_latent_min_size = 128, 16  # settable as in diffusers
        tiled_z = vae.encode(x).latent_dist.mean
        tiled_y = vae.decode(ref_z).sample
        vae.disable_tiling()
    assert len(calls) == 2 and tiled_z.shape == ref_z.shape and tiled_y.shape == ref_x.shape
    assert not torch.equal(tiled_z, ref_z)  # the encoder's GroupNorm sees each tile's statistics


def test_export_writes_0644_keeps_a_folders_factors_and_names_source_and_destination(tiny_ckpt, tmp_path):
    import os
    import stat
    from pathlib import Path

    stats, out, runner = tmp_path / "stats.json", tmp_path / "hf", CliRunner()
    stats.write_text(json.dumps({"nz": 4, "normalization": {"sample": {"scaling_factor": 3.84, "shift_factor": 0.1}}}))
    src = str(load_autoencoder(tiny_ckpt).path)

    def export(*args):
        before = os.umask(0o022)
        try:
            return runner.invoke(app, ["export", tiny_ckpt, *map(str, args)])
        finally:
            os.umask(before)

    def factors():
        c = json.loads((out / "config.json").read_text())
        return c["scaling_factor"], c["shift_factor"]

    res = export(out, "--format", "diffusers", "--stats", stats)
    assert res.exit_code == 0 and f"from {src}" in res.output and f"to a diffusers LiteVAE folder {out}:" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in out.iterdir()), res.output
    res = export(out, "--format", "diffusers")  # re-export: the folder's factors stay
    assert res.exit_code == 0 and factors() == (3.84, 0.1) and "kept from the existing" in res.output, res.output
    res = export(out, "--format", "diffusers", "--reset-factors")
    assert res.exit_code == 0 and factors() == (1.0, 0.0) and "identity factors" in res.output, res.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"latent_channels": 16, "scaling_factor": 2.0}))
    res = export(tmp_path / "other", "--format", "diffusers")
    assert res.exit_code == 2 and "factors of a 16-channel model, this one has 4: give --stats or --reset-factors" \
        in res.output and "Traceback" not in res.output
    res = export(tmp_path / "m.safetensors")
    assert res.exit_code == 0 and res.output.startswith("exported ") and f"from {src}" in res.output
    assert res.output.rstrip().endswith(f"to {tmp_path / 'm.safetensors'}")
    assert stat.S_IMODE(Path(tmp_path / "m.safetensors").stat().st_mode) == 0o644
    assert export(tmp_path / "n.safetensors", "--reset-factors").exit_code == 2
