"""Issue 16 items 2-3: what a training run leaves on disk. Numbered checkpoints pruned to
`train.keep_checkpoints` (last.pt always kept), checkpoint and export modes (0644 under umask 022, as a
plain open() gives), atomic writes that leave nothing behind on failure, and the TensorBoard event file
read back with TensorBoard's own EventAccumulator (scalars, learning rate, reconstruction images)."""

import os
import stat

import pytest

from litevae_cli.files.atomic import atomic_path
from litevae_cli.files.export import export_model
from litevae_cli.files.checkpoint import load_checkpoint, prune_numbered
from litevae_cli.config import load_config
from litevae_cli.errors import UserError
from litevae_cli.training.loop import train


@pytest.fixture(scope="module")
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture(scope="module")
def run6(tmp_path_factory, umask_022, one_torch_thread):
    """6 steps of the tiny preset: a numbered checkpoint every step, keep 2, a grid every 2 steps, TensorBoard on."""
    from conftest import TINY_PRESET
    import numpy as np
    import yaml
    from PIL import Image

    root = tmp_path_factory.mktemp("run6")
    data = root / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    preset = yaml.safe_load(yaml.safe_dump(TINY_PRESET))
    preset["train"].update(steps=6, keep_checkpoints=2)
    preset["log"].update(checkpoint_every=1, sample_every=2, tensorboard=True)
    (root / "tiny.yaml").write_text(yaml.safe_dump(preset))
    assert train("pretrain", str(root / "tiny.yaml"), str(data), root / "run", device="cpu") == 0
    return root / "run"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keep_checkpoints_2_of_6_leaves_the_2_newest_and_last(run6):
    names = sorted(p.name for p in (run6 / "checkpoints").iterdir())
    assert names == ["last.pt", "step-0000005.pt", "step-0000006.pt"]
    assert load_checkpoint(run6 / "checkpoints" / "last.pt")["step"] == 6
    assert load_checkpoint(run6 / "checkpoints" / "step-0000005.pt")["step"] == 5


def test_checkpoints_and_exports_are_0644(run6, tmp_path, umask_022):
    for p in (run6 / "checkpoints").iterdir():
        assert _mode(p) == 0o644, p
    out = export_model(run6 / "checkpoints" / "last.pt", tmp_path / "model.safetensors")
    assert _mode(out) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left beside it


def test_event_file_holds_scalars_learning_rate_and_reconstruction_images(run6):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run6 / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"g/total", "g/l1", "g/kl", "lr", "img_per_s"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("g/total")] == [1, 2, 3, 4, 5, 6]
    assert all(e.value == pytest.approx(1e-4) for e in acc.Scalars("lr"))
    assert "reconstructions" in tags["images"]
    images = acc.Images("reconstructions")
    assert [e.step for e in images] == [2, 4, 6]
    # The grid: inputs over reconstructions, SAMPLE_IMAGES (here batch 2) side by side at 32 px.
    assert (images[-1].height, images[-1].width) == (64, 64)
    assert images[-1].encoded_image_string.startswith(b"\x89PNG")


def test_prune_numbered_keeps_newest_by_step_and_never_last(tmp_path):
    for step in (1, 2, 10, 100, 1000):
        (tmp_path / f"step-{step:07d}.pt").write_bytes(b"x")
    (tmp_path / "last.pt").write_bytes(b"x")
    (tmp_path / "step-notes.pt").write_bytes(b"x")  # not a numbered checkpoint: left alone
    gone = prune_numbered(tmp_path, 2)
    assert sorted(p.name for p in gone) == ["step-0000001.pt", "step-0000002.pt", "step-0000010.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step-0000100.pt", "step-0001000.pt",
                                                          "step-notes.pt"]
    assert prune_numbered(tmp_path, 0) == [] and len(list(tmp_path.iterdir())) == 4  # 0 = keep all


def test_atomic_write_follows_the_umask_and_leaves_nothing_on_failure(tmp_path):
    before = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"data")
        assert _mode(tmp_path / "a.bin") == 0o664
    finally:
        os.umask(before)
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert (tmp_path / "a.bin").read_bytes() == b"data" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_keep_checkpoints_is_validated_and_presets_say_it(tmp_path):
    with pytest.raises(UserError, match="train.keep_checkpoints"):
        load_config("b-pretrain", ["train.keep_checkpoints=-1"])
    from litevae_cli.config import _resolve_preset

    for name in ("b-pretrain", "b-finetune", "demo", "demo-finetune"):
        assert "keep_checkpoints:" in _resolve_preset(name).read_text(), name
    assert load_config("b-pretrain").train.keep_checkpoints == load_config("b-finetune").train.keep_checkpoints == 5
