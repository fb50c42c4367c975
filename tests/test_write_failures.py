"""A failed write is one line naming the file and the cause, exit 2, the previous file intact, no temp
file left (issue 25.3). The failure is injected at each write site by patching `os.write` (every byte
litevae writes goes through it, see files/atomic.py) to raise for the files a pattern names, from the
k-th write on (a full disk stays full); `os.fsync` and `os.replace` likewise. A last test fills a real
tmpfs and runs the CLI in a real process on it (needs root; skipped where mount is refused)."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.files import atomic
from litevae_cli.files.atomic import WriteError, os_error_in
from litevae_cli.files.checkpoint import save_atomic
from litevae_cli.files.export_file import write_export_file
from litevae_cli.files.outputs import SkipLog

runner = CliRunner()
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")]
ENOSPC = "No space left on device (errno 28)"


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def inject(monkeypatch, pattern: str, k: int = 1, code: int = errno.ENOSPC, call: str = "write", short=False):
    """From the k-th `os.<call>` on a file whose path matches `pattern`, raise OSError(code). `short`: the
    writes before it write only half their bytes (a real short write). Returns the list of failed paths."""
    real, seen, failed = getattr(os, call), [0], []

    def fake(*args):
        where = _target(args[0]) if call in ("write", "fsync") else str(args[1])
        if re.search(pattern, where):
            seen[0] += 1
            if seen[0] >= k:
                failed.append(where)
                raise OSError(code, os.strerror(code))
            if short and call == "write":
                return real(args[0], bytes(args[1])[: max(1, len(args[1]) // 2)])
        return real(*args)

    monkeypatch.setattr(os, call, fake)
    return failed


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line(result) -> bool:
    return result.exit_code == 2 and "Traceback" not in result.output and len(result.stderr.splitlines()) == 1


def _cli(*args):
    return runner.invoke(app, [*map(str, args)])


# ----------------------------------------------------------------------------- each site, in the library
def _checkpoint(p):
    save_atomic({"w": torch.arange(400_000, dtype=torch.float32), "step": 3}, p)  # 1.6 MB: several writes


def _export(p):
    write_export_file(p, {"encoder": "x"}, {"w": torch.ones(400_000)}, 3, True)


def _json(p):
    atomic.write_json(p, {"count": 3, "rows": list(range(50_000))})


def _image(p):
    atomic.save_image(Image.new("RGB", (600, 600), (1, 2, 3)).effect_spread(5), p)


def _skipped(p):
    SkipLog(p, say=lambda *a: None, resume=True).add("img9.png" * 200_000, "cannot identify image file")


SITES = {"checkpoint": (_checkpoint, "last.pt"), "export": (_export, "model.safetensors"),
         "json": (_json, "stats.json"), "image": (_image, "sample.png"), "append": (_skipped, "skipped.txt")}


@pytest.mark.parametrize("site", sorted(SITES))
@pytest.mark.parametrize("k", [1, 2])
def test_a_failed_write_at_each_site_is_one_line_and_keeps_the_previous_file(site, k, tmp_path, monkeypatch):
    write, name = SITES[site]
    path = tmp_path / name
    if site == "append":
        path.write_text("old.png\tbroken\n")
    else:
        write(path)  # the previous version
    before = _snapshot(tmp_path)
    failed = inject(monkeypatch, re.escape(name), k=k, short=True)
    with pytest.raises(WriteError) as info:
        write(path)
    message = str(info.value)
    assert failed, "the injected fault was never reached"
    assert message.startswith(f"cannot write {path}: {ENOSPC}") and "\n" not in message, message
    assert ("is kept as it was" if site == "append" else f"the previous {name} is intact") in message
    assert _snapshot(tmp_path) == before  # byte-identical, and no temp file beside it


@pytest.mark.parametrize("call, code, words", [
    ("write", errno.EIO, "Input/output error (errno 5)"),
    ("write", errno.EDQUOT, "Disk quota exceeded (errno 122)"),
    ("fsync", errno.EIO, "Input/output error (errno 5)"),
    ("replace", errno.EROFS, "Read-only file system (errno 30)"),
    ("replace", errno.EACCES, "Permission denied (errno 13)"),
])
def test_every_cause_and_every_step_of_the_atomic_write(call, code, words, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    _checkpoint(path)
    before = _snapshot(tmp_path)
    inject(monkeypatch, r"last\.pt", code=code, call=call)
    with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(path))}: {re.escape(words)}; the previous "
                                         r"last.pt is intact$"):
        _checkpoint(path)
    assert _snapshot(tmp_path) == before


def test_torch_and_safetensors_wrapped_errors_are_recognised():
    """torch raises RuntimeError('[enforce fail at inline_container.cc:672] unexpected pos ...') with the
    OSError only as its context; safetensors a SafetensorError naming the os error in its text."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    except RuntimeError as err:
        assert os_error_in(err).errno == errno.ENOSPC
    bare = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert os_error_in(bare) is not None  # still a write failure, also without a context
    st = type("SafetensorError", (Exception,), {})("Error while serializing: I/O error: No space left on device "
                                                   "(os error 28)")
    assert atomic.describe(os_error_in(st)) == ENOSPC
    assert os_error_in(ValueError("a bug")) is None and os_error_in(RuntimeError("shape mismatch")) is None


def test_a_device_target_is_written_in_place_never_renamed_over(tmp_path):
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full")
    with pytest.raises(WriteError, match=f"^cannot write /dev/full: {re.escape(ENOSPC)}$"):
        atomic.write_json("/dev/full", {"a": 1})
    assert Path("/dev/full").is_char_device()


# ----------------------------------------------------------------------------- through the CLI: exit 2
def test_a_checkpoint_that_cannot_be_written(tiny_preset, make_images, tmp_path, monkeypatch):
    preset = tiny_preset(train={"steps": 2}, log={"checkpoint_every": 1})
    inject(monkeypatch, r"\.step-0000002\.pt\.")
    res = _cli("pretrain", "--preset", preset, "--data", make_images(n=2), "--out", tmp_path / "run", "--device", "cpu")
    ckpt = tmp_path / "run" / "checkpoints"
    assert _one_line(res), res.output
    assert res.stderr.strip() == (f"error: cannot write {ckpt / 'step-0000002.pt'}: {ENOSPC}; {ckpt / 'last.pt'} "
                                  "(the previous checkpoint) is intact")
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt", "step-0000001.pt"]  # no temp file
    assert (ckpt / "last.pt").read_bytes() == (ckpt / "step-0000001.pt").read_bytes()
    assert torch.load(ckpt / "last.pt", weights_only=True)["step"] == 1


def _encode(ckpt, data, out, *extra):
    return _cli("encode-dataset", ckpt, "--data", data, "--out", out, "--resolution", 16, "--batch-size", 1,
                "--shard-size", 1, "--workers", 0, "--device", "cpu", *extra)


@pytest.mark.parametrize("pattern, k, failed", [(r"latents-000001\.tar$", 1, "latents-000001.tar"),
                                                (r"progress-r0\.jsonl$", 3, "progress-r0.jsonl")])
def test_encode_dataset_on_a_full_disk_names_the_file_and_resumes(tiny_ckpt, make_images, tmp_path, monkeypatch,
                                                                  pattern, k, failed):
    """A shard, or the journal line that would commit it (the header is append 1, shard 0's line append 2)."""
    data, out = make_images(n=3), tmp_path / "lat"
    with monkeypatch.context() as m:
        inject(m, pattern, k=k)
        res = _encode(tiny_ckpt, data, out)
    assert _one_line(res), res.output
    assert res.stderr.strip().startswith(f"error: cannot write {out / failed}: {ENOSPC}"), res.stderr
    assert "rerun the same command to resume" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [".litevae.lock", "latents-000000.tar", "progress-r0.jsonl"]
    lines = [json.loads(line) for line in (out / "progress-r0.jsonl").read_text().splitlines()]
    assert [r.get("shard") for r in lines[1:]] == ["latents-000000.tar"]  # exactly the committed shard
    res = _encode(tiny_ckpt, data, out)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "stats.json").read_text())["count"] == 3


def test_export_and_reconstruct_keep_the_previous_file(tiny_ckpt, make_images, tmp_path, monkeypatch):
    model = tmp_path / "m.safetensors"
    assert _cli("export", tiny_ckpt, model).exit_code == 0
    images, out = make_images(n=1), tmp_path / "rec"
    assert _cli("reconstruct", tiny_ckpt, images, "--out", out, "--device", "cpu").exit_code == 0
    before = {"model": model.read_bytes(), **_snapshot(out)}
    with monkeypatch.context() as m:
        inject(m, r"m\.safetensors")
        res = _cli("export", tiny_ckpt, model)
    assert _one_line(res) and res.stderr.strip() == (f"error: cannot write {model}: {ENOSPC}; the previous "
                                                     "m.safetensors is intact"), res.output
    with monkeypatch.context() as m:
        inject(m, r"img0_recon\.png")
        res = _cli("reconstruct", tiny_ckpt, images, "--out", out, "--device", "cpu")
    assert _one_line(res) and f"error: cannot write {out / 'img0_recon.png'}: {ENOSPC}" in res.stderr, res.output
    assert {"model": model.read_bytes(), **_snapshot(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_json_report_that_cannot_be_written(tmp_path, monkeypatch):
    report = tmp_path / "models.json"
    assert _cli("models", "--json", report).exit_code == 0
    before = _snapshot(tmp_path)
    inject(monkeypatch, r"models\.json", code=errno.EROFS)
    res = _cli("models", "--json", report)
    assert _one_line(res) and res.stderr.strip() == (f"error: cannot write {report}: Read-only file system (errno 30); "
                                                     "the previous models.json is intact"), res.output
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- a real full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs at tmp_path/disk (root only; skipped where mount is refused), unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path, leave: int) -> None:
    """Fill `disk` up, then free `leave` bytes: small files still fit, a checkpoint does not."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def test_a_real_full_disk(tiny_preset, tiny_ckpt, make_images, small_disk):
    run, data = small_disk / "run", make_images(n=2)
    preset = tiny_preset(log={"checkpoint_every": 1})
    assert _cli("pretrain", "--preset", preset, "--data", data, "--out", run, "--device", "cpu",
                "--steps", 1).exit_code == 0
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    _fill(small_disk, leave=128 << 10)
    done = subprocess.run([sys.executable, "-m", "litevae_cli", "pretrain", "--preset", preset, "--data", data,
                           "--out", run, "--device", "cpu", "--steps", "2"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: cannot write {run / 'checkpoints' / 'step-0000002.pt'}: {ENOSPC}; {last} (the previous "
        "checkpoint) is intact"), done.stderr
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "step-0000001.pt"]
    model = small_disk / "m.safetensors"
    res = _cli("export", tiny_ckpt, model)
    assert _one_line(res) and res.stderr.strip() == f"error: cannot write {model}: {ENOSPC}", res.output
    assert not model.exists() and not [p for p in small_disk.iterdir() if p.name.startswith(".m.")]
    vae = small_disk / "vae"
    res = _cli("export", tiny_ckpt, vae, "--format", "diffusers")  # save_pretrained staging in VAE fails
    assert _one_line(res) and res.stderr.strip().startswith(f"error: cannot write {vae}"), res.output
    assert ENOSPC in res.stderr and list(vae.iterdir()) == []


def test_a_user_error_raised_from_an_os_error_keeps_its_message(tmp_path):
    """A download refused inside atomic_path (`raise UserError(...) from None` in an `except HTTPError`)."""
    from litevae_cli.errors import UserError

    with pytest.raises(UserError, match="^cannot download x: HTTP 404$") as info:
        with atomic.atomic_path(tmp_path / "x"):
            try:
                raise OSError(errno.ENOENT, "HTTP Error 404")
            except OSError:
                raise UserError("cannot download x: HTTP 404") from None
    assert not isinstance(info.value, WriteError) and list(tmp_path.iterdir()) == []


def test_a_diffusers_folder_that_cannot_be_written(tiny_ckpt, tmp_path, monkeypatch):
    """Staged by save_pretrained, then each file published atomically (a full disk while staging: the real
    tmpfs test below)."""
    out = tmp_path / "vae"
    assert _cli("export", tiny_ckpt, out, "--format", "diffusers").exit_code == 0
    before = _snapshot(out)
    inject(monkeypatch, r"\.diffusion_pytorch_model\.safetensors\.")
    res = _cli("export", tiny_ckpt, out, "--format", "diffusers")
    assert _one_line(res) and res.stderr.strip() == (f"error: cannot write {out / 'diffusion_pytorch_model.safetensors'}"
                                                     f": {ENOSPC}; the previous diffusion_pytorch_model.safetensors "
                                                     "is intact"), res.output
    assert _snapshot(out) == before and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_the_run_record_that_cannot_be_written(tiny_preset, make_images, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("old: record\n")
    inject(monkeypatch, r"config\.yaml")
    res = _cli("pretrain", "--preset", tiny_preset(train={"steps": 1}), "--data", make_images(n=1), "--out", run,
               "--device", "cpu")
    assert _one_line(res) and res.stderr.strip() == (f"error: cannot write {run / 'config.yaml'}: {ENOSPC}; the "
                                                     "previous config.yaml is intact"), res.output
    assert (run / "config.yaml").read_text() == "old: record\n" and not list(run.glob(".config*"))
