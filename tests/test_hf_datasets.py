"""--data from a Hugging Face `datasets` dataset: save_to_disk folders, parquet / imagefolder, the image column,
the split, training / eval / encode-dataset on it, and one-line errors (no datasets package, offline Hub name)."""

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.data import DataError, load_image, resolve_source, source_id
from litevae_cli.data.loaders import make_eval_loader

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: set the imported flags too, so no network is tried
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()


def _pil(n, size=40):
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _saved(tmp_path, n=3, split_dict=False):
    feats = datasets.Features({"caption": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"]),
                               "photo": datasets.Image()})
    ds = datasets.Dataset.from_dict({"caption": [f"c{i}" for i in range(n)], "label": [i % 2 for i in range(n)],
                                     "photo": _pil(n)}, features=feats)
    out = tmp_path / ("dd" if split_dict else "ds")
    (datasets.DatasetDict(train=ds, test=ds.select([0])) if split_dict else ds).save_to_disk(str(out))
    return out, ds


def test_a_saved_dataset_is_an_indexable_source_with_the_image_column_found(tmp_path):
    path, ds = _saved(tmp_path)
    for spec in (str(path), f"hf:{path}", f"hf:{path}#photo"):
        src = resolve_source(spec)
        assert src.indexable and [it.key for it in src.items] == ["000000", "000001", "000002"]
        assert [it.source for it in src.items] == [f"hf:{path}#photo[{i}]" for i in range(3)]
        assert (src.classes, [it.class_name for it in src.items]) == (["a", "b"], ["a", "b", "a"])
    assert np.array_equal(np.asarray(load_image(src.items[1].source)), np.asarray(ds[1]["photo"].convert("RGB")))
    assert source_id(str(path)) == f"hf:{path}"
    batch = next(iter(make_eval_loader(src, 32, 3)))
    assert batch["images"].shape == (3, 3, 32, 32) and batch["meta"][2]["source"] == f"hf:{path}#photo[2]"


def test_splits_parquet_and_imagefolder(tmp_path):
    path, ds = _saved(tmp_path, split_dict=True)
    assert [it.key for it in resolve_source(str(path)).items] == ["train/000000", "train/000001", "train/000002"]
    assert [it.source for it in resolve_source(f"hf:{path}:test").items] == [f"hf:{path}:test#photo[0]"]
    with pytest.raises(DataError, match=r"no split 'val' \(splits: train, test\)"):
        resolve_source(f"hf:{path}:val")
    ds.to_parquet(str(tmp_path / "pq" / "train-0.parquet"))
    for spec in (str(tmp_path / "pq" / "train-0.parquet"), f"hf:{tmp_path / 'pq'}"):
        src = resolve_source(spec)
        assert len(src) == 3 and load_image(src.items[2].source).size == (40, 40)
    for cls, img in zip(("cat", "dog"), _pil(2, 24)):
        (tmp_path / "imf" / cls).mkdir(parents=True)
        img.save(tmp_path / "imf" / cls / "x.png")
    src = resolve_source(f"hf:{tmp_path / 'imf'}")
    assert src.classes == ["cat", "dog"] and [load_image(it.source).size for it in src.items] == [(24, 24)] * 2
    (tmp_path / "imf" / "state.json").write_text("{}")  # a stray state.json: still an image folder without hf:
    assert resolve_source(str(tmp_path / "imf")).kind == "folder"


def test_one_line_errors(tiny_ckpt, tmp_path, monkeypatch):
    path, _ = _saved(tmp_path)
    with pytest.raises(DataError, match=r"no column 'img' \(columns: caption, label, photo\)"):
        resolve_source(f"hf:{path}#img")
    datasets.Dataset.from_dict({"t": ["x"]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(DataError, match="no column of type datasets.Image .*name the image column as hf:NAME#COLUMN"):
        resolve_source(str(tmp_path / "text"))
    res = CliRunner().invoke(app, ["encode-dataset", tiny_ckpt, "--data", "hf:someone/no-such-dataset",
                                   "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "cannot load Hugging Face dataset someone/no-such-dataset" in res.output and "HF_HUB_OFFLINE is set" in res.output
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(DataError, match=r"`datasets` package is not installed: pip install 'litevae\[hf\]'"):
        resolve_source(f"hf:{path}")


def test_pretrain_eval_and_encode_dataset_on_a_saved_dataset(tiny_preset, tiny_ckpt, tmp_path):
    path, _ = _saved(tmp_path, n=4)
    runner = CliRunner()
    res = runner.invoke(app, ["pretrain", "--preset", tiny_preset(train={"steps": 2}), "--data", f"hf:{path}",
                              "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "4 images from column 'photo'" in res.output and (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    res = runner.invoke(app, ["eval", tiny_ckpt, "--data", str(path), "--metrics", "psnr", "--resolution", "16",
                              "--json", str(tmp_path / "e.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["results"][0]["images"] == 4
    res = runner.invoke(app, ["encode-dataset", tiny_ckpt, "--data", f"hf:{path}", "--out", str(tmp_path / "lat"),
                              "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "lat" / "stats.json").read_text())["count"] == 4
