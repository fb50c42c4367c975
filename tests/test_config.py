"""Tests for litevae_cli.config: shipped presets, --set overrides, validation errors, dump/load round trip."""

from __future__ import annotations

import pytest
import yaml

from litevae_cli.config import (Config, resolve_config, config_to_dict, dump_config, list_presets,
                                load_config)
from litevae_cli.errors import UserError

SHIPPED = ("b-pretrain", "b-finetune", "demo", "demo-finetune")


def test_shipped_presets_are_listed():
    assert set(SHIPPED) <= set(list_presets())


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_validates(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config) and cfg.name == name
    assert cfg.phase in ("pretrain", "finetune", "distill")
    # A LiteVAE finetune preset trains against a discriminator; a decoder-only one keeps the encoder frozen,
    # and a distill preset trains the student encoder alone, its model derived from --teacher.
    if cfg.phase == "finetune":
        assert cfg.discriminator.name or cfg.train.trainable == "decoder"
    if cfg.phase == "distill":
        assert cfg.model is None and cfg.train.trainable == "encoder" and cfg.discriminator.name is None


def test_sd_decoder_ft_follows_the_published_recipe():
    """sd-vae-ft-mse's ft-EMA (model card): decoder only, L1 + LPIPS, EMA weights; the model is --from's."""
    cfg = load_config("sd-decoder-ft")
    assert cfg.model is None and cfg.train.trainable == "decoder" and cfg.train.ema_decay
    assert (cfg.loss.l1, cfg.loss.lpips, cfg.loss.lpips_net) == (1.0, 1.0, "vgg")
    assert cfg.loss.kl == cfg.loss.wavelet == cfg.loss.gaussian == cfg.loss.adversarial == 0


def test_model_source_rules_per_phase(tmp_path):
    from litevae_cli.config import resolve_config

    with pytest.raises(UserError, match="must describe the model to pretrain"):
        resolve_config("demo", ["model=null"])
    with pytest.raises(UserError, match="must be null for distill"):
        resolve_config("distill", ["model.encoder=litevae-s", "model.decoder=smc-decoder"])
    with pytest.raises(UserError, match="trains the encoder alone"):
        resolve_config("distill", ["train.trainable=all"])
    with pytest.raises(UserError, match="registered decoder, not an encoder"):
        resolve_config("distill", ["distill.student=smc-decoder"])
    with pytest.raises(UserError, match="distill.student_kwargs.bogus"):
        resolve_config("distill", ["distill.student_kwargs.bogus=1"])


def test_recipe_numbers():
    a, b = load_config("b-pretrain"), load_config("b-finetune")
    assert (a.model.encoder, a.model.decoder, a.model.nz) == ("litevae-b", "smc-decoder", 12)
    assert a.data.resolution == 128 and a.train.steps == 100_000 and a.discriminator.name is None
    assert b.data.resolution == 256 and b.train.steps == 50_000 and b.discriminator.name == "unet-disc-s"
    assert (a.loss.kl, a.loss.wavelet, a.loss.gaussian) == (1e-3, 1.0, 0.5)  # KL from the sweep (BENCHMARKS.md)
    assert a.optim.betas == [0.5, 0.9] and a.optim.lr == 1e-4
    for demo in ("demo", "demo-finetune"):
        cfg = load_config(demo)
        assert cfg.loss.lpips == 0.0 and cfg.train.precision == "fp32"


def test_b_presets_train_with_vgg_lpips_and_eval_reports_alexnet():
    from litevae_cli.metrics.evaluate import EvalOptions

    for name in ("b-pretrain", "b-finetune"):
        cfg = load_config(name)
        assert (cfg.loss.lpips, cfg.loss.lpips_net) == (1.0, "vgg"), name  # P App. D.1: LDM's LPIPS (VGG)
    assert EvalOptions.__dataclass_fields__["lpips_net"].default == "alex"  # the reporting convention


def test_set_overrides_nested_and_lists():
    cfg = load_config("demo", ["train.steps=7", "optim.betas=[0.9, 0.99]", "model.decoder_kwargs.channels=16",
                               "train.ema_decay=0.999", "log.tensorboard=true", "loss.kl=1e-3"])
    assert cfg.train.steps == 7
    assert cfg.optim.betas == [0.9, 0.99]
    assert cfg.model.decoder_kwargs == {"channels": 16, "mults": [1, 2, 2, 2]}
    assert cfg.train.ema_decay == 0.999 and cfg.log.tensorboard is True
    assert cfg.loss.kl == pytest.approx(1e-3)
    # An int where a float is expected is accepted and stored as float.
    assert load_config("demo", ["optim.lr=1"]).optim.lr == 1.0
    # null switches the discriminator off.
    assert load_config("demo-finetune", ["discriminator.name=null", "discriminator.kwargs={}"]).discriminator.name is None


@pytest.mark.parametrize("override, key", [
    ("train.stepz=3", "train.stepz"),                       # unknown key
    ("bogus.x=1", "bogus"),                                 # unknown section
    ("train.steps=many", "train.steps"),                    # wrong type
    ("train.steps=2.5", "train.steps"),                     # float for int
    ("log.tensorboard=1", "log.tensorboard"),               # int for bool
    ("optim.betas=0.5", "optim.betas"),                     # scalar for list
    ("optim.betas=[0.5]", "optim.betas"),                   # wrong length
    ("train.precision=fp8", "train.precision"),             # bad enum
    ("discriminator.loss=wasserstein", "discriminator.loss"),
    ("loss.kl=-1", "loss.kl"),                              # negative weight
    ("train.steps=0", "train.steps"),
    ("data.resolution=100", "data.resolution"),             # not a multiple of 8
    ("model.encoder=litevae-xl", "model.encoder"),          # unknown registry name
    ("model.encoder=smc-decoder", "model.encoder"),         # wrong kind
    ("discriminator.name=litevae-b", "discriminator.name"),
    ("model.decoder_kwargs.chanels=8", "model.decoder_kwargs.chanels"),  # not a builder argument
    ("model.encoder_kwargs.nz=4", "model.encoder_kwargs.nz"),            # set model.nz instead
])
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(UserError) as err:
        load_config("demo", [override])
    msg = str(err.value)
    assert f"'{key}'" in msg and "--set" in msg and "\n" not in msg


def test_bad_set_syntax():
    with pytest.raises(UserError, match="key.sub=value"):
        load_config("demo", ["train.steps"])


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="unknown preset"):
        load_config("no-such-preset")
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_roundtrip_and_preset_by_path(tmp_path):
    cfg = load_config("b-finetune", ["model.encoder_kwargs.dropout=0.1"])
    path = tmp_path / "resolved.yaml"
    dump_config(cfg, path)
    again = load_config(str(path))
    assert config_to_dict(again) == config_to_dict(cfg)
    assert yaml.safe_load(path.read_text())["model"]["encoder_kwargs"] == {"dropout": 0.1}


def test_partial_yaml_uses_defaults_and_errors_name_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("phase: pretrain\nmodel: {encoder: litevae-tiny, decoder: smc-decoder-tiny, nz: 4}\n"
                    "train: {steps: 5}\n")
    cfg = load_config(str(path))
    assert cfg.name == "mine" and cfg.train.batch_size == 16 and cfg.discriminator.name is None
    assert cfg.loss.kl == 1e-3 and cfg.data.rescale == [0.5, 1.0]
    path.write_text("phase: pretrain\nmodel: {encoder: litevae-tiny, decoder: smc-decoder-tiny}\n")
    with pytest.raises(UserError, match=r"missing config key 'train.steps' \(in preset .*mine.yaml\)"):
        load_config(str(path))
    path.write_text("phase: pretrain\nmodel: {encoder: litevae-tiny, decoder: smc-decoder-tiny}\n"
                    "train: {steps: 5, typo: 1}\n")
    with pytest.raises(UserError, match=r"'train.typo' \(in preset"):
        load_config(str(path))


def test_flags_win_over_set_and_errors_name_their_source():
    base = load_config("demo")
    cfg = resolve_config("demo", ["train.steps=9"], {"--steps": 3, "--precision": "bf16", "--batch-size": None})
    assert (cfg.train.steps, cfg.train.precision, cfg.train.batch_size) == (3, "bf16", base.train.batch_size)
    with pytest.raises(UserError, match=r"train.batch_size.*\(in --batch-size\)"):
        resolve_config("demo", flags={"--batch-size": 0})
    with pytest.raises(UserError, match=r"'optim.lr'.*\(in --set\)"):
        resolve_config("demo", ["optim.lr=-1"], {"--steps": 3})
    with pytest.raises(UserError, match="finetune --from"):
        resolve_config("demo-finetune", phase="pretrain")
