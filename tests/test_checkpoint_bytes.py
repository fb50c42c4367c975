"""Checkpoints with equal contents are byte-identical (issue 25.6): two equal runs, and a run stopped by
SIGTERM and resumed against one that ran straight through, give the same sha256. Before, the zip records
were named after the random temp file, and pickle's identity-based memo made a resumed optimizer's keys
(read back from the checkpoint) pickle differently from fresh ones."""

import hashlib
import os
import pickle
import signal
import zipfile

import pytest
import torch

from litevae_cli.files.atomic import canonical, torch_save
from litevae_cli.training import log as run_log
from litevae_cli.training.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_names_do_not_depend_on_the_temp_file(tmp_path):
    obj = {"w": torch.arange(6.0), "step": 2}
    torch_save(obj, tmp_path / "a.pt")
    torch_save(obj, tmp_path / "b.pt")
    names = zipfile.ZipFile(tmp_path / "a.pt").namelist()
    assert names and all(n.startswith("archive/") for n in names), names
    assert _sha(tmp_path / "a.pt") == _sha(tmp_path / "b.pt")


def test_equal_strings_pickle_alike_whoever_made_them():
    fresh = {"state": {0: {"step": 1}}, "step": 1}
    read_back = pickle.loads(pickle.dumps({"state": {0: {"step": 1}}}))  # keys no longer the interned literal
    read_back["step"] = 1
    assert pickle.dumps(fresh) != pickle.dumps(read_back)  # what made resumed checkpoints differ
    assert pickle.dumps(canonical(fresh)) == pickle.dumps(canonical(read_back))
    sd = torch.nn.Linear(2, 2).state_dict()
    assert canonical(sd)._metadata == sd._metadata  # module versions kept for load_state_dict


def test_equal_runs_and_a_resumed_run_write_the_same_bytes(tiny_preset, make_images, tmp_path, monkeypatch):
    preset = tiny_preset(train={"steps": 3, "seed": 0, "ema_decay": 0.9}, log={"checkpoint_every": 1},
                         discriminator={"name": "patchgan-tiny"})
    data = str(make_images(n=2))
    for name in ("straight", "again"):
        assert train("pretrain", preset, data, tmp_path / name, device="cpu") == 0

    real_write = run_log.RunLog.write

    def stop_after_step_1(self, record):  # a SIGTERM arrives: the loop finishes its step, saves and stops
        real_write(self, record)
        if record["step"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as m:
        m.setattr(run_log.RunLog, "write", stop_after_step_1)
        assert train("pretrain", preset, data, tmp_path / "resumed", device="cpu") == 128 + signal.SIGTERM
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)["step"] in (1, 2)
    assert train("pretrain", preset, data, tmp_path / "resumed", device="cpu") == 0

    for name in ("last.pt", "step-0000001.pt", "step-0000002.pt", "step-0000003.pt"):
        shas = {run: _sha(tmp_path / run / "checkpoints" / name) for run in ("straight", "again", "resumed")}
        assert len(set(shas.values())) == 1, (name, shas)
    assert torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
