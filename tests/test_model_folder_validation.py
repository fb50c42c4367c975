"""Issue 25.5: model folders and stats.json are checked on every path that reads them, the Python API included.

`LiteVAE.from_pretrained` / `litevae_cli.load` read a local folder with the CLI's own readers and raise
one exception type, `ModelFileError`, with the CLI's one-line message; the CLI (`export`, `eval`) answers
the same folders with exit 2 and that line. stats.json factors are numbers, finite and in range, and a
NaN is never written into a config.json.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import litevae_cli
from litevae_cli.cli import app
from litevae_cli.errors import ModelFileError, UserError
from litevae_cli.files.diffusers_folder import CONFIG_NAME, WEIGHTS_NAME

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def good_folder(tiny_ckpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("good") / "vae"
    litevae_cli.load(tiny_ckpt).save_pretrained(folder)
    return folder


def _edit_config(folder, **changes):
    config = json.loads((folder / CONFIG_NAME).read_text())
    config.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(config))  # json writes NaN as the bare token NaN


def _edit_weights(folder, edit):
    state = load_file(str(folder / WEIGHTS_NAME))
    edit(state)
    save_file(state, str(folder / WEIGHTS_NAME))


def _first(state):
    return sorted(state)[0]


def _int8(state):
    key = _first(state)
    state[key] = state[key].to(torch.int8)


def _truncate(folder):
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[:len(data) // 2])


# (name, corruption, a fragment of the one-line message)
CASES = [
    ("missing config", lambda f: (f / CONFIG_NAME).unlink(), f"has no {CONFIG_NAME}"),
    ("config not JSON", lambda f: (f / CONFIG_NAME).write_text("{not json"), "cannot read"),
    ("wrong types", lambda f: _edit_config(f, latent_channels="4"), "latent_channels must be an integer"),
    ("missing weights", lambda f: (f / WEIGHTS_NAME).unlink(), f"has no {WEIGHTS_NAME}"),
    ("weights a pickle", lambda f: torch.save({"a": torch.zeros(1)}, f / WEIGHTS_NAME), "cannot load"),
    ("truncated weights", _truncate, "cannot load"),
    ("missing tensor", lambda f: _edit_weights(f, lambda s: s.pop(_first(s))), "missing 1 tensor(s)"),
    ("extra tensor", lambda f: _edit_weights(f, lambda s: s.update(extra=torch.zeros(2))), "unexpected 1 tensor(s)"),
    ("wrong shape", lambda f: _edit_weights(f, lambda s: s.update({_first(s): torch.zeros(3, 3)})), "size mismatch"),
    ("int8 weights", lambda f: _edit_weights(f, _int8), "not floating point"),
    ("NaN factor", lambda f: _edit_config(f, scaling_factor=math.nan), "scaling_factor must be a finite number"),
    ("wrong class", lambda f: _edit_config(f, _class_name="UNet2DModel"), "describes a UNet2DModel model"),
]


@pytest.mark.parametrize("name, corrupt, fragment", CASES, ids=[c[0] for c in CASES])
def test_malformed_folders_are_one_model_file_error(good_folder, tmp_path, name, corrupt, fragment):
    folder = tmp_path / "vae"
    shutil.copytree(good_folder, folder)
    corrupt(folder)
    with pytest.raises(ModelFileError) as info:
        litevae_cli.LiteVAE.from_pretrained(folder)
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message and fragment in message, message
    # the CLI reads the same folder and says the same in one line
    res = runner.invoke(app, ["export", str(folder), str(tmp_path / "out.safetensors")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], res.output
    if name != "wrong class":  # the CLI also takes AutoencoderKL folders, so it names both classes
        assert lines[0] == f"error: {message}"


def test_int8_weights_are_refused_by_eval(good_folder, tmp_path, make_images):
    folder = tmp_path / "vae"
    shutil.copytree(good_folder, folder)
    _edit_weights(folder, _int8)
    res = runner.invoke(app, ["eval", str(folder), "--data", str(make_images(n=1)), "--resolution", "32"])
    assert res.exit_code == 2 and "not floating point" in res.output and len(res.output.strip().splitlines()) == 1


def test_a_good_folder_loads_and_keeps_its_config(good_folder):
    vae = litevae_cli.load(good_folder)
    assert vae.config.latent_channels == 4 and not vae.training
    assert litevae_cli.load(good_folder / WEIGHTS_NAME).config.sample_size == vae.config.sample_size


def _stats(tmp_path, **sample):
    factors = {"scaling_factor": 0.5, "shift_factor": 0.1, "channel_scaling_factor": [1.0] * 4,
               "channel_shift_factor": [0.0] * 4, **sample}
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"nz": 4, "normalization": {"sample": factors, "mean": factors}}))
    return path


@pytest.mark.parametrize("bad, fragment", [
    ({"scaling_factor": "0.5"}, "scaling_factor must be a number, got str"),
    ({"scaling_factor": math.nan}, "scaling_factor must be a finite number, got nan"),
    ({"shift_factor": math.inf}, "shift_factor must be a finite number"),
    ({"scaling_factor": 1e308}, "scaling_factor must be in [1e-06, 1e+06]"),
    ({"scaling_factor": -2.0}, "scaling_factor must be in"),
    ({"shift_factor": True}, "shift_factor must be a number, got bool"),
])
def test_bad_stats_json_is_one_line_everywhere(tiny_ckpt, tmp_path, bad, fragment):
    stats = _stats(tmp_path, **bad)
    res = runner.invoke(app, ["export", tiny_ckpt, str(tmp_path / "hf"), "--format", "diffusers",
                              "--stats", str(stats)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and fragment in res.output and str(stats) in res.output
    assert not (tmp_path / "hf" / CONFIG_NAME).exists()  # nothing written, NaN least of all
    with pytest.raises(ModelFileError, match=fragment.replace("[", r"\[").replace("+", r"\+")):
        litevae_cli.load(tiny_ckpt, stats=stats)
    from litevae_cli.latents.stats import normalization_factors

    with pytest.raises(UserError, match="must be"):  # LatentShards' path
        normalization_factors(json.loads(stats.read_text()), sample=True)


def test_good_stats_json_still_applies(tiny_ckpt, tmp_path):
    vae = litevae_cli.load(tiny_ckpt, stats=_stats(tmp_path))
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (0.5, 0.1)


def test_kept_nan_factor_is_never_written_again(tiny_ckpt, good_folder, tmp_path):
    out = tmp_path / "hf"
    shutil.copytree(good_folder, out)
    _edit_config(out, scaling_factor=math.nan)
    res = runner.invoke(app, ["export", tiny_ckpt, str(out), "--format", "diffusers"])
    assert res.exit_code == 2 and "--reset-factors" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["export", tiny_ckpt, str(out), "--format", "diffusers", "--reset-factors"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / CONFIG_NAME).read_text())["scaling_factor"] == 1.0


def test_autoencoder_kl_folder_factors_are_checked(tmp_path):
    from diffusers import AutoencoderKL

    folder = tmp_path / "kl"
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4).save_pretrained(folder)
    for key, value, fragment in (("scaling_factor", "x", "must be a number"), ("latents_mean", [0.0] * 3,
                                                                                 "3 values for 4 latent channels"),
                                 ("shift_factor", math.inf, "finite")):
        _edit_config(folder, **{key: value})
        res = runner.invoke(app, ["export", str(folder), str(tmp_path / "o.safetensors")])
        assert res.exit_code == 2 and fragment in res.output and len(res.output.strip().splitlines()) == 1, res.output
        _edit_config(folder, **{key: None if key != "scaling_factor" else 0.18215})


def _hub_cache(cache, folder, repo="owner/vae", commit="0" * 40):
    """A Hugging Face cache holding `folder` as `repo` at revision main (what hf_hub_download leaves)."""
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text(commit)


def test_a_hub_id_is_read_with_the_same_checks(good_folder, tmp_path):
    _hub_cache(tmp_path / "good", good_folder)
    vae = litevae_cli.load("owner/vae", cache_dir=tmp_path / "good", local_files_only=True)
    assert vae.config.latent_channels == 4
    bad = tmp_path / "bad-folder"
    shutil.copytree(good_folder, bad)
    _edit_weights(bad, _int8)
    _hub_cache(tmp_path / "bad", bad)
    with pytest.raises(ModelFileError, match="not floating point"):
        litevae_cli.load("owner/vae", cache_dir=tmp_path / "bad", local_files_only=True)
    with pytest.raises(ModelFileError, match="model not found: owner/other is no local path"):
        litevae_cli.load("owner/other", cache_dir=tmp_path / "good", local_files_only=True)


def test_the_latent_reader_reads_stats_json_the_same_way(tmp_path):
    from litevae_cli.latents.reader import read_stats

    (tmp_path / "stats.json").write_bytes(bytes(range(256)))
    with pytest.raises(UserError, match="cannot read latent statistics .*stats.json"):
        read_stats(str(tmp_path))
    (tmp_path / "stats.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="must hold a JSON object, got list"):
        read_stats(str(tmp_path))
