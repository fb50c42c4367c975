"""Bring your own VAE, end to end on diffusers' own AutoencoderKL folders (tiny SD- and FLUX-shaped configs):
decoder-only finetune -> export that plain diffusers loads with the encoder untouched; distill a LiteVAE
encoder into the folder's latent space -> export -> `vae=` of a pipeline built on the teacher's latents."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.cli import app

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKL  # noqa: E402

runner = CliRunner()
SD_LIKE = dict(block_out_channels=[16, 32, 32, 32], down_block_types=["DownEncoderBlock2D"] * 4,
               up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, norm_num_groups=8, latent_channels=4,
               sample_size=32, scaling_factor=0.18215)
FLUX_LIKE = dict(SD_LIKE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                 scaling_factor=0.3611, shift_factor=0.1159)
DEMO = {"data": {"resolution": 32, "workers": 0},
        "log": {"every": 1, "sample_every": 100, "checkpoint_every": 100, "tensorboard": False}}


def _folder(tmp_path, cfg, name):
    torch.manual_seed(0)
    vae = AutoencoderKL(**cfg).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    vae.save_pretrained(tmp_path / name)
    return vae, tmp_path / name


def _preset(tmp_path, name, shipped, **changes):
    """A shipped preset at test size: 32 px, LPIPS off, a few steps."""
    from litevae_cli.config import config_to_dict, load_config

    data = config_to_dict(load_config(shipped))
    data.pop("name")
    for section, values in {**DEMO, **changes}.items():
        data[section].update(values)
    data["loss"]["lpips"] = 0.0
    data["train"].update(steps=3, batch_size=2, precision="fp32", ema_decay=0.9)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def images(make_images):
    return make_images("images", n=3, size=40)


def test_decoder_finetune_of_a_diffusers_vae_exports_a_plain_autoencoderkl(tmp_path, images):
    original, folder = _folder(tmp_path, SD_LIKE, "sd")
    preset = _preset(tmp_path, "dec", "sd-decoder-ft")
    result = runner.invoke(app, ["finetune", "--preset", preset, "--from", str(folder), "--data", str(images),
                                 "--out", str(tmp_path / "ft"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "ft"), str(tmp_path / "out"), "--format", "diffusers"])
    assert result.exit_code == 0, result.output
    tuned, info = AutoencoderKL.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert tuned.config.scaling_factor == 0.18215  # the latent space's factor is kept
    ours, theirs = tuned.state_dict(), original.state_dict()
    encoder_side = [k for k in theirs if k.startswith(("encoder.", "quant_conv."))]
    decoder_side = [k for k in theirs if k.startswith(("decoder.", "post_quant_conv."))]
    assert all(torch.equal(ours[k], theirs[k]) for k in encoder_side)  # encoder + quant conv bit-identical
    assert any(not torch.equal(ours[k], theirs[k]) for k in decoder_side)
    assert any(not torch.equal(ours[k], theirs[k]) for k in decoder_side if k.startswith("post_quant_conv."))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(tuned.encode(x).latent_dist.mean, original.encode(x).latent_dist.mean)


def test_distilled_encoder_plugs_into_a_pipeline_built_on_the_teachers_latents(tmp_path, images):
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    import litevae_cli

    teacher, folder = _folder(tmp_path, SD_LIKE, "sd")
    preset = _preset(tmp_path, "d", "distill")
    result = runner.invoke(app, ["distill", "--teacher", str(folder), "--student", "litevae-tiny", "--data",
                                 str(images), "--out", str(tmp_path / "d"), "--preset", preset, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "d"), str(tmp_path / "dvae"), "--format", "diffusers"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "dvae" / "config.json").read_text())
    assert config["_class_name"] == "LiteVAE" and config["encoder_type"] == "litevae-tiny"
    assert config["scaling_factor"] == 0.18215 and config["latent_channels"] == 4  # the teacher's space
    vae = litevae_cli.load(tmp_path / "dvae")
    # A pipeline made for the teacher's latents (4 x 8 x 8 at 64 px) takes the distilled VAE as vae=; its
    # decoder is the teacher's, so the same latents give the same images as the teacher itself.
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                num_layers=1, sample_size=8, patch_size=2, norm_num_groups=4)
    images_out = {}
    for name, v in (("distilled", vae), ("teacher", teacher)):
        pipe = DiTPipeline(transformer=dit, vae=v, scheduler=DDIMScheduler())
        images_out[name] = pipe(class_labels=[1], num_inference_steps=2, guidance_scale=1.0, output_type="np",
                                generator=torch.Generator().manual_seed(0)).images
    assert images_out["distilled"].shape == (1, 64, 64, 3) and images_out["distilled"].std() > 0
    assert abs(images_out["distilled"] - images_out["teacher"]).max() < 1e-5
    # and its encoder writes latents of the teacher's shape that the pipeline's scaling reads
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert vae.encode(x).latent_dist.sample().shape == teacher.encode(x).latent_dist.sample().shape


def test_flux_shaped_teacher_with_a_4_channel_student_is_one_line(tmp_path, images):
    _, folder = _folder(tmp_path, FLUX_LIKE, "flux")
    s = _preset(tmp_path, "s", "demo", model={"encoder": "litevae-tiny", "decoder": "smc-decoder-tiny", "nz": 4,
                                               "encoder_kwargs": {}, "decoder_kwargs": {}})
    assert runner.invoke(app, ["pretrain", "--preset", s, "--data", str(images), "--out", str(tmp_path / "s"),
                               "--steps", "1", "--device", "cpu"]).exit_code == 0
    preset = _preset(tmp_path, "d", "distill")
    result = runner.invoke(app, ["distill", "--teacher", str(folder), "--student", str(tmp_path / "s"), "--data",
                                 str(images), "--out", str(tmp_path / "d"), "--preset", preset, "--device", "cpu"])
    text = result.output.strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1 and "Traceback" not in text
    assert "4 latent channels" in text and "16" in text and not (tmp_path / "d").exists()


def test_teacher_whose_latent_grid_differs_from_the_students_is_one_line(tmp_path, images):
    three_levels = dict(SD_LIKE, block_out_channels=[16, 32, 32], down_block_types=["DownEncoderBlock2D"] * 3,
                        up_block_types=["UpDecoderBlock2D"] * 3)  # latents 1/4 of the image side; LiteVAE's are 1/8
    _, folder = _folder(tmp_path, three_levels, "f4")
    result = runner.invoke(app, ["distill", "--teacher", str(folder), "--student", "litevae-tiny", "--data",
                                 str(images), "--out", str(tmp_path / "d"), "--preset",
                                 _preset(tmp_path, "d", "distill"), "--device", "cpu"])
    text = result.output.strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1 and "cannot match" in text, text
    assert not (tmp_path / "d").exists()
