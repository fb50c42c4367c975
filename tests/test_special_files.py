"""Special files (FIFOs, sockets, broken links, symlink loops) are named as what they are and never
opened: in folder scans, single-file specs, lists/globs (skipped by the loaders) and reconstruct's
explicit arguments (skipped, in skipped.txt)."""

import os
import socket
import threading

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.data import DataError, load_image, resolve_source
from litevae_cli.data.loaders import make_eval_loader

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")


def _folder(root):
    root.mkdir()
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(root / "good.png")
    os.mkfifo(root / "pipe.png")
    os.symlink("loop.jpg", root / "loop.jpg")
    os.symlink("missing.png", root / "dangling.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    return root, sock


def _returns_within(fn, seconds=20.0):
    """fn() in a thread; fails if it blocks (a FIFO opened for reading would)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked: a special file was opened"
    return out


def test_folder_scan_names_special_files(tmp_path):
    root, sock = _folder(tmp_path / "d")
    with sock:
        src = resolve_source(str(root))
    assert [i.key for i in src.items] == ["good"]
    note = " ".join(src.notes)
    for needle in ("pipe.png is a FIFO, not an image file", "loop.jpg is a symlink loop",
                   "dangling.png is a broken symlink", "sock.png is a socket, not an image file"):
        assert needle in note, note


def test_explicit_special_files_are_named_not_opened(tmp_path):
    root, sock = _folder(tmp_path / "d")
    with sock:
        for name, what in [("pipe.png", "is a FIFO, not an image file"), ("loop.jpg", "is a symlink loop"),
                           ("sock.png", "is a socket")]:
            out = _returns_within(lambda: load_image(str(root / name)))
            assert isinstance(out.get("error"), DataError) and what in str(out["error"]), out
            with pytest.raises(DataError, match=what):  # as a --data spec too
                resolve_source(str(root / name))
        # a list naming them: the loader skips each and says what it is
        (root / "list.txt").write_text("good.png\npipe.png\nloop.jpg\n")
        out = _returns_within(lambda: list(make_eval_loader(str(root / "list.txt"), 16, 4)))
        batch = out["value"][0]
        assert len(batch["meta"]) == 1 and dict(batch["skipped"]) == {
            "pipe": f"{root / 'pipe.png'} is a FIFO, not an image file",
            "loop": f"{root / 'loop.jpg'} is a symlink loop"}


def test_reconstruct_skips_a_fifo_argument(tiny_ckpt, tmp_path):
    root, sock = _folder(tmp_path / "d")
    sock.close()
    out = tmp_path / "out"
    res = _returns_within(lambda: CliRunner().invoke(app, ["reconstruct", tiny_ckpt, str(root / "good.png"),
                                                           str(root / "pipe.png"), "--resolution", "16",
                                                           "--out", str(out), "--device", "cpu"]),
                          seconds=120)["value"]  # generous: a loaded machine; a FIFO read would block forever
    assert res.exit_code == 0, res.output
    assert "pipe.png is a FIFO, not an image file" in (out / "skipped.txt").read_text()
    assert (out / "good_recon.png").exists() and "image not found" not in res.output
