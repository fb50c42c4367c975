"""log.wandb: an offline W&B run read back from its run-*.wandb file: the scalars of metrics.jsonl, the
reconstruction images, the resolved config, the run name, the same run id on resume; a missing wandb is a
one-line error before any work."""

import json
import struct
import sys

import pytest
from typer.testing import CliRunner

from litevae_cli.cli import app

wandb = pytest.importorskip("wandb")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    for k, v in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true",
                 "WANDB_DISABLE_CODE": "true", "WANDB_API_KEY": ""}.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "wb").mkdir()


def _records(path):
    """The protobuf Records of a .wandb file: a LevelDB-style log (7-byte file header ":W&B" magic version,
    32 KiB blocks, each chunk a 7-byte header crc32 / length / type FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the block's zero-padded tail
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(parts)
            out.append(rec)
    return out


def _run(tmp_path):
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    history, config, meta = [], {}, []
    for path in runs:
        for rec in _records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                meta.append((rec.run.run_id, rec.run.display_name, rec.run.project))
                config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
            elif kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return runs, meta, config, history


def _train(tiny_preset, data, out, steps):
    preset = tiny_preset(log={"every": 1, "sample_every": 2, "checkpoint_every": 2, "tensorboard": False,
                              "wandb": True, "wandb_project": "litevae-test"}, train={"steps": steps})
    return CliRunner().invoke(app, ["pretrain", "--preset", preset, "--data", str(data), "--out", str(out),
                                    "--device", "cpu"])


def test_an_offline_run_holds_the_scalars_images_config_and_resumes_on_the_same_id(tiny_preset, make_images, tmp_path):
    data, out = make_images(n=2, size=32), tmp_path / "my-run"
    res = _train(tiny_preset, data, out, 2)
    assert res.exit_code == 0, res.output
    stored = json.loads((out / "wandb-run.json").read_text())
    runs, meta, config, history = _run(tmp_path)
    assert len(runs) == 1 and meta == [(stored["id"], "my-run", "litevae-test")]
    assert config["loss"]["l1"] == 1.0 and config["log"]["wandb"] is True and config["run"]["data"] == str(data)
    jsonl = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = [h for h in history if "g/l1" in h]
    assert [h["step"] for h in scalars] == [1, 2]
    for line, h in zip(jsonl, scalars):
        assert {k: v for k, v in line.items() if k != "step"} == pytest.approx({k: h[k] for k in line if k != "step"})
    images = [h for h in history if "reconstructions/_type" in h]  # nested keys come flattened
    assert [(h["step"], h["reconstructions/_type"]) for h in images] == [(2, "image-file")]
    from PIL import Image

    with Image.open(runs[0].parent / "files" / images[0]["reconstructions/path"]) as im, \
            Image.open(out / "samples" / "step-0000002.png") as grid:
        assert im.size == grid.size and im.tobytes() == grid.convert(im.mode).tobytes()

    res = _train(tiny_preset, data, out, 4)  # resumes from step 2: the same W&B run
    assert res.exit_code == 0 and "resum" in res.output.lower(), res.output
    runs, meta, _, history = _run(tmp_path)
    assert len(runs) == 2 and {m[0] for m in meta} == {stored["id"]}
    assert [h["step"] for h in history if "g/l1" in h] == [1, 2, 3, 4]


def test_log_wandb_without_the_package_is_one_line_before_any_work(tiny_preset, make_images, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    res = _train(tiny_preset, make_images(n=1), tmp_path / "run", 1)
    assert res.exit_code != 0 and not (tmp_path / "run").exists()
    assert res.output.strip().splitlines() == ["error: log.wandb is on but the wandb package is not installed: pip "
                                               "install 'litevae[wandb]' (or pip install wandb), or --set log.wandb=false"]
