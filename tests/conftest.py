"""Shared pytest fixtures: one torch thread, a tiny checkpoint, image folders and tiny presets."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

# A CPU-sized training run: litevae-tiny + smc-decoder-tiny at 32 px, no LPIPS (no weights offline),
# endless unless --steps is given, a metrics line every step, no checkpoint until the run stops.
TINY_PRESET = {
    "name": "tiny", "phase": "pretrain",
    "model": {"encoder": "litevae-tiny", "decoder": "smc-decoder-tiny", "nz": 4},
    "data": {"resolution": 32, "workers": 0},
    "loss": {"lpips": 0.0},
    "train": {"steps": 100000, "batch_size": 2, "precision": "fp32"},
    "log": {"every": 1, "sample_every": 100000, "checkpoint_every": 100000, "tensorboard": False},
}


def merged_preset(*layers: dict) -> dict:
    """TINY_PRESET with `layers` merged in order: a dict section updates the section, anything else
    (a scalar such as phase, or None) replaces it. A fresh copy every call."""
    data = yaml.safe_load(yaml.safe_dump(TINY_PRESET))
    for layer in layers:
        for section, values in layer.items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section].update(values)
            else:
                data[section] = values
    return data


def write_preset(path, *layers: dict) -> str:
    """`merged_preset(*layers)` written as YAML to `path`; returns the path as a string."""
    path.write_text(yaml.safe_dump(merged_preset(*layers)))
    return str(path)


def image_folder(folder, n=3, size=40, broken=0, seed=0):
    """`folder` with n noise PNGs img<i>.png plus `broken` unreadable files bad<i>.png (the first empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    for i in range(broken):
        (folder / f"bad{i}.png").write_bytes(b"" if i == 0 else b"not a png")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of tiny convolutions: on a loaded 2-core machine, OpenMP
    spin-waiting across threads made them up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    """A litevae-tiny + smc-decoder-tiny checkpoint (nz 4, no EMA, step 1)."""
    from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
    from litevae_cli.models import build_autoencoder

    torch.manual_seed(0)
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    return str(save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(),
                            "model": ae.state_dict(), "ema": None, "step": 1, "config": {}},
                           tmp_path_factory.mktemp("tiny-model") / "tiny.pt"))


@pytest.fixture
def make_images(tmp_path):
    """make_images(name, n, size, broken) -> a folder of n noise PNGs img<i>.png plus `broken` unreadable
    files bad<i>.png (the first one empty, the others text)."""

    def make(name="images", n=3, size=40, broken=0):
        return image_folder(tmp_path / name, n, size, broken, seed=len(name))

    return make


@pytest.fixture
def tiny_preset(tmp_path):
    """tiny_preset(**sections) -> the path of TINY_PRESET with `sections` merged in, as a YAML file."""

    def make(**sections):
        return write_preset(tmp_path / f"tiny-{len(list(tmp_path.glob('tiny-*.yaml')))}.yaml", sections)

    return make
