"""Failure handling across the commands (issue 12, "Nothing lost, nothing silent"), in one process: the
output-folder lock, unreadable and missing inputs, one-line errors instead of tracebacks, outputs checked
before the work, refused pickles, stops. The faults that need real processes (group SIGTERM, dead workers,
two runs at once) are in test_failure_handling_processes.py."""

import json
import os
import pickle
import signal
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import litevae_cli.files.checkpoint as checkpoint
import litevae_cli.files.model_file as model_file
from litevae_cli.metrics import evaluate
from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, save_atomic
from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.cli import app
from litevae_cli.data import resolve_source
from litevae_cli.errors import UserError
from litevae_cli.files.outputs import LOCK_NAME, OutputLock
from litevae_cli.training.loop import train

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _one_line(result, code=2):
    """Exit `code`, no traceback, and the error is one line on stderr (stdout may hold a progress bar)."""
    return result.exit_code == code and "Traceback" not in result.output and len(result.stderr.splitlines()) == 1


def _cli(*args):
    return runner.invoke(app, [*map(str, args), "--device", "cpu"])


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot create files in: a read-only one, or /sys when running as root."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for folder in (ro, Path("/sys")):
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            yield folder
            break
    else:
        pytest.skip("no folder here refuses new files")
    ro.chmod(0o755)


# ----------------------------------------------------------------------------- one folder, one run
def test_folder_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999\n")  # left behind by a process that is gone: no flock held
    with OutputLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(UserError, match=f"in use by another litevae process \\(PID {os.getpid()}\\)"):
            OutputLock(tmp_path).__enter__()
    with OutputLock(tmp_path):  # released at the end of the first holder's block
        pass


# ----------------------------------------------------------------------------- encode: all-unreadable batch
def test_encode_survives_an_all_unreadable_batch_and_reruns(tiny_ckpt, make_images, tmp_path):
    data = make_images(n=2, broken=1)  # bad0.png (0 bytes) comes first: batch 1 holds only it
    args = ["encode-dataset", tiny_ckpt, "--data", data, "--out", tmp_path / "lat", "--resolution", 16,
            "--batch-size", 1, "--shard-size", 2, "--workers", 0]
    res = _cli(*args)
    assert res.exit_code == 0 and "2 in total in 1 shards, 1 skipped" in res.output, res.output
    assert "skipped unreadable bad0" in res.output
    stats = json.loads((tmp_path / "lat" / "stats.json").read_text())
    assert (stats["count"], stats["skipped"]) == (2, 1)
    assert (tmp_path / "lat" / "skipped.txt").read_text().startswith("bad0\t")
    again = _cli(*args)
    assert again.exit_code == 0 and "encoded 0 images now" in again.output, again.output


# ----------------------------------------------------------------------------- symlink loops
def test_symlinked_folders_are_walked_once(make_images):
    data = make_images(n=2)
    (data / "sub").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(data / "sub" / "x.png")
    os.symlink(".", data / "loop")  # a loop: without the check, every level repeats the whole folder
    os.symlink("sub", data / "alias")  # a second way into sub: the real path names it
    assert [i.key for i in resolve_source(str(data)).items] == ["img0", "img1", "sub/x"]


# ----------------------------------------------------------------------------- runs on nothing
def test_nothing_readable_is_a_one_line_error_before_any_work(tiny_ckpt, tiny_preset, make_images, tmp_path):
    broken = make_images("broken", n=0, broken=2)
    res = _cli("pretrain", "--preset", tiny_preset(), "--data", broken, "--out", tmp_path / "run")
    assert _one_line(res) and "no readable image" in res.output and "bad0" in res.output, res.output
    assert not (tmp_path / "run").exists()
    for args in (["eval", tiny_ckpt, "--data", broken, "--resolution", 16, "--json", tmp_path / "e.json"],
                 ["encode-dataset", tiny_ckpt, "--data", broken, "--out", tmp_path / "lat"],
                 ["inspect-latents", tiny_ckpt, "--data", broken, "--out", tmp_path / "insp"]):
        res = _cli(*args)
        assert _one_line(res) and "no readable image" in res.output, (args, res.output)
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "lat" / "stats.json").exists()
    # A source with a readable image whose pass reads none (--limit 1 stops before it): still no NaN row.
    mixed = make_images("mixed", n=1, broken=1)
    res = _cli("eval", tiny_ckpt, "--data", mixed, "--resolution", 16, "--limit", 1)
    assert _one_line(res) and "no image of" in res.output and "could be read at 16 px" in res.output, res.output


def test_unreachable_shard_urls_fail_at_once(tiny_ckpt):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    res = _cli("eval", tiny_ckpt, "--data", f"http://127.0.0.1:{port}/s-{{000000..000001}}.tar", "--resolution", 16)
    assert _one_line(res) and "cannot reach shard" in res.output, res.output
    assert time.time() - t0 < 30


# ----------------------------------------------------------------------------- one line, not a traceback
def test_outputs_are_checked_before_the_work(tiny_ckpt, tiny_preset, make_images, tmp_path, unwritable,
                                               monkeypatch):
    data = make_images(n=1)
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(model_file, "create_autoencoder", lambda *a, **k: pytest.fail("work started"))
    cases = [
        (["pretrain", "--preset", tiny_preset(), "--data", data, "--out", afile], "is a file"),
        (["pretrain", "--preset", tiny_preset(), "--data", data, "--out", unwritable / "run"], "cannot write in"),
        (["encode-dataset", tiny_ckpt, "--data", data, "--out", afile / "lat"], "is a file"),
        (["reconstruct", tiny_ckpt, data, "--out", afile], "is a file"),
        (["inspect-latents", tiny_ckpt, "--data", data, "--out", afile], "is a file"),
        (["eval", tiny_ckpt, "--data", data, "--json", unwritable / "e.json"], "cannot write in"),
        (["eval", tiny_ckpt, "--data", data, "--json", tmp_path], "is a folder"),
    ]
    for args, needle in cases:
        res = _cli(*args)
        assert _one_line(res) and needle in res.output, (args, res.output)


def test_a_disk_that_fails_at_write_time_is_one_line(tiny_ckpt, make_images):
    res = _cli("eval", tiny_ckpt, "--data", make_images(n=1), "--resolution", 16, "--json", "/dev/full")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.strip().splitlines()[-1] == "error: cannot write /dev/full: No space left on device (errno 28)"


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tiny_preset, make_images, tmp_path, monkeypatch):
    preset = tiny_preset(train={"steps": 4}, log={"checkpoint_every": 2})
    real_save = torch.save

    def save(obj, f, *a, **k):
        if obj.get("step") == 4:
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(UserError, match=r"cannot write .*step-0000004.pt: No space left on device \(errno 28\); .*last.pt "
                                        r"\(the previous checkpoint\) is intact"):
        train("pretrain", preset, str(make_images(n=2)), tmp_path / "run", device="cpu")
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(ckpt_dir / "last.pt")["step"] == 2
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt", "step-0000002.pt"]  # no temp file left


@pytest.mark.parametrize("override, needle", [
    ("train.seed=-1", "'train.seed' must be >= 0"),
    ("model.decoder_kwargs.channels=-3", "config model (litevae-tiny + smc-decoder"),
    ("model.decoder_kwargs.mults=[]", "cannot be built"),
    ("data.resolution=8", "must be a multiple of 8 and at least 16"),
])
def test_bad_configs_are_one_line(tiny_preset, make_images, tmp_path, override, needle):
    res = _cli("pretrain", "--preset", tiny_preset(), "--data", make_images(n=1), "--out", tmp_path / "run",
               "--set", "model.decoder=smc-decoder", "--set", override)  # the tiny decoder takes no kwargs
    assert _one_line(res) and needle in res.output, res.output
    assert not (tmp_path / "run").exists()


def test_model_files_without_a_usable_spec_are_one_line(tiny_ckpt, make_images, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in load_autoencoder(tiny_ckpt).model.state_dict().items()}
    version = str(CHECKPOINT_VERSION)
    save_file(state, str(tmp_path / "nospec.safetensors"), metadata={"format": "litevae-export", "version": version})
    save_file(state, str(tmp_path / "badjson.safetensors"),
              metadata={"format": "litevae-export", "version": version, "model_spec": "{"})
    save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                 "model": torch.load(tiny_ckpt, weights_only=True)["model"]}, tmp_path / "nospec.pt")
    image = make_images(n=1) / "img0.png"
    for name, needle in (("nospec.safetensors", "no model_spec"), ("badjson.safetensors", "not valid JSON"),
                         ("nospec.pt", "no model_spec")):
        res = _cli("reconstruct", tmp_path / name, image, "--out", tmp_path / "rec")
        assert _one_line(res) and needle in res.output, (name, res.output)


def test_finetune_from_a_checkpoint_missing_a_tensor(tiny_ckpt, tiny_preset, make_images, tmp_path):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    del ckpt["model"]["decoder.conv_out.weight"]
    save_atomic(ckpt, tmp_path / "partial.pt")
    res = _cli("finetune", "--preset", tiny_preset(phase="finetune"), "--data", make_images(n=1), "--out", tmp_path / "ft",
               "--from", tmp_path / "partial.pt")
    assert _one_line(res) and "missing 1 tensor(s), e.g. decoder.conv_out.weight" in res.output, res.output


def test_the_minimum_side_is_checked_and_small_images_are_padded(tiny_ckpt, tmp_path):
    res = _cli("eval", tiny_ckpt, "--data", "sample-holdout", "--resolution", "8")
    assert _one_line(res) and "--resolution must be a multiple of 8 and at least 16, got 8" in res.output
    Image.fromarray(np.full((6, 10, 3), 90, np.uint8)).save(tmp_path / "tiny.png")
    res = _cli("reconstruct", tiny_ckpt, tmp_path / "tiny.png", "--native", "--out", tmp_path / "rec")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "rec" / "tiny_recon.png").size == (10, 6)


# ----------------------------------------------------------------------------- bad images, every command
def test_every_command_skips_counts_and_names_unreadable_images(tiny_ckpt, tiny_preset, make_images, tmp_path,
                                                                  capsys):
    data = make_images(n=2, broken=1)
    assert train("pretrain", tiny_preset(train={"steps": 2}), str(data), tmp_path / "run", device="cpu") == 0
    assert "skipped unreadable bad0" in capsys.readouterr().out
    assert (tmp_path / "run" / "skipped.txt").read_text().startswith("bad0\t")
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["skipped_images"] >= 0

    res = _cli("reconstruct", tiny_ckpt, data, "--out", tmp_path / "rec", "--resolution", 16)
    assert res.exit_code == 0 and "1 unreadable image(s) skipped" in res.output, res.output
    assert (tmp_path / "rec" / "skipped.txt").read_text().startswith(f"{data / 'bad0.png'}\t")
    assert (tmp_path / "rec" / "img1_recon.png").is_file()

    res = _cli("inspect-latents", tiny_ckpt, "--data", data, "--resolution", 16, "--out", tmp_path / "insp",
               "--json", tmp_path / "insp.json")
    assert res.exit_code == 0 and "skipped unreadable bad0" in res.output, res.output
    assert json.loads((tmp_path / "insp.json").read_text())["skipped"] == 1
    assert (tmp_path / "insp" / "skipped.txt").read_text().startswith("bad0\t")

    res = _cli("eval", tiny_ckpt, "--data", data, "--resolution", 16, "--json", tmp_path / "e.json")
    assert res.exit_code == 0 and "1 unreadable image(s) listed in" in res.output, res.output
    assert (tmp_path / "e.skipped.txt").read_text().startswith("bad0\t")
    assert json.loads((tmp_path / "e.json").read_text())["results"][0]["skipped"] == 1


# ----------------------------------------------------------------------------- no unsafe advice
class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_refused_pickle_says_it_would_run_code_and_never_suggests_weights_only_false(tmp_path):
    torch.save({"format": CHECKPOINT_FORMAT, "x": _Evil()}, tmp_path / "evil.pt")
    with open(tmp_path / "raw.pt", "wb") as f:
        pickle.dump({"format": CHECKPOINT_FORMAT, "x": _Evil()}, f)
    for name in ("evil.pt", "raw.pt"):
        with pytest.raises(UserError) as err:
            load_checkpoint(tmp_path / name)
        assert "refused, because loading it would run code from the file" in str(err.value)
        assert "weights_only" not in str(err.value)
    assert "(it calls print)" in str(pytest.raises(UserError, load_checkpoint, tmp_path / "evil.pt").value)
    res = _cli("eval", tmp_path / "evil.pt", "--data", "sample-holdout", "--resolution", 16)
    assert _one_line(res) and "would run code" in res.output and "weights_only" not in res.output


# ----------------------------------------------------------------------------- MODEL says what it is
def test_a_model_argument_that_is_no_model_says_what_the_file_is(make_images, tmp_path):
    images = Path(make_images(n=2))
    img, text = images / "img0.png", tmp_path / "notes.txt"
    text.write_text("eval notes\n")
    (tmp_path / "renamed.pt").write_bytes(text.read_bytes())
    jpg = tmp_path / "photo.dat"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpg, format="JPEG")  # by content, not by name
    swapped = "is an image, not a model (did you swap MODEL and --data?)"
    cases = [(img, f"{img} {swapped}"), (jpg, f"{jpg} {swapped}"),
             (images, f"{images} is a folder of images, not a model (did you swap MODEL and --data?)"),
             (text, f"{text} is not a checkpoint, export or diffusers folder (MODEL is a training checkpoint .pt, "
                    "a run folder, an exported .safetensors or a diffusers folder)"),
             (tmp_path / "renamed.pt", "renamed.pt is not a checkpoint, export or diffusers folder")]
    for model, needle in cases:
        res = _cli("eval", model, "--data", images, "--resolution", 16)
        assert _one_line(res) and needle in res.stderr and "cannot load" not in res.output, (model, res.output)
    res = _cli("encode-dataset", img, "--data", images, "--out", tmp_path / "o")
    assert _one_line(res) and swapped in res.stderr


# ----------------------------------------------------------------------------- eval obeys a stop
def test_eval_stops_on_sigterm_before_the_next_batch(tiny_ckpt, make_images, tmp_path, monkeypatch):
    real = evaluate.reconstruct_uint8

    def signalled(*args, **kwargs):  # SIGTERM arrives while the first batch is being evaluated
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "reconstruct_uint8", signalled)
    res = _cli("eval", tiny_ckpt, "--data", make_images(n=4), "--resolution", 16, "--batch-size", 1,
               "--workers", 1, "--json", tmp_path / "e.json")
    assert res.exit_code == 128 + signal.SIGTERM and "Traceback" not in res.output, res.output
    assert "SIGTERM received: eval stopped at 16 px after 1 images; no result was reported" in res.output
    assert not (tmp_path / "e.json").exists()
