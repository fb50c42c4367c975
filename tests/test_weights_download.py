"""Issue 16 item 1: opt-in, verified download of reference weights, against a local http.server.

The server on 127.0.0.1 plays LITEVAE_WEIGHTS_MIRROR and serves one good file (a randomly initialised
AlexNet `features.*` state dict under the AlexNet file name) and one corrupted file (under the VGG name);
the pinned hash table is patched to the hashes of the true test files. Good: it lands in the torch hub
cache and LPIPS loads it. Bad: refused with one line naming file, expected and actual hash, and nothing
is left in the cache. Without the flag nothing is fetched and the offline message stays.
"""

import functools
import hashlib
import http.server
import os
import stat
import threading

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from litevae_cli.metrics import weights as weights_download
from litevae_cli.cli import app
from litevae_cli.errors import UserError
from litevae_cli.metrics.weights import build_lpips, find_weight

runner = CliRunner()
ALEX, VGG = "alexnet-owt-7be5be79.pth", "vgg16-397923af.pth"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """An HTTP mirror on 127.0.0.1 serving a good ALEX and a corrupted VGG; pins patched; TORCH_HOME empty.
    Yields (base URL, served folder, list of requested paths, the AlexNet features state dict)."""
    served = tmp_path / "served"
    served.mkdir()
    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}
    torch.save(features, served / ALEX)
    true_vgg = b"the real VGG bytes"
    (served / VGG).write_bytes(true_vgg[:-1] + b"X")  # corrupted in transit (or a tampered mirror)
    monkeypatch.setattr(weights_download, "PINNED", {
        ALEX: weights_download.Pin(_sha((served / ALEX).read_bytes()), (served / ALEX).stat().st_size),
        VGG: weights_download.Pin(_sha(true_vgg), len(true_vgg)),
    })
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest's output clean
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(weights_download.ENV_MIRROR, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv(weights_download.ENV_DOWNLOAD, raising=False)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served, requests, features
    finally:
        server.shutdown()
        server.server_close()


def _cache(tmp_path):
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_good_file_lands_in_the_cache_verified_and_lpips_loads_it(mirror, tmp_path, monkeypatch):
    _, served, requests, features = mirror
    monkeypatch.setenv(weights_download.ENV_DOWNLOAD, "1")
    before = os.umask(0o022)
    try:
        path = find_weight("alex")
    finally:
        os.umask(before)
    assert path == _cache(tmp_path) / ALEX and requests == [f"/{ALEX}"]
    assert path.read_bytes() == (served / ALEX).read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in _cache(tmp_path).iterdir()) == [ALEX]  # no temp file beside it
    model = build_lpips("alex")  # found on disk now: no second request
    assert torch.equal(model.net.slice1[0].weight, features["features.0.weight"]) and len(requests) == 1


def test_corrupted_file_is_refused_in_one_line_and_nothing_is_left(mirror, tmp_path, tiny_ckpt):
    base, served, requests, _ = mirror
    result = runner.invoke(app, ["eval", tiny_ckpt, "--data", "sample-holdout", "--metrics", "lpips",
                                 "--lpips-net", "vgg", "--download-weights"])
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = err.strip()
    assert "\n" not in line
    expected, actual = weights_download.PINNED[VGG].sha256, _sha((served / VGG).read_bytes())
    assert VGG in line and f"expected {expected}" in line and f"got {actual}" in line and f"{base}/{VGG}" in line
    assert requests == [f"/{VGG}"]
    assert not _cache(tmp_path).exists() or list(_cache(tmp_path).iterdir()) == []


def test_without_the_flag_nothing_is_fetched_and_the_offline_message_stays(mirror, tmp_path):
    _, _, requests, _ = mirror
    with pytest.raises(UserError) as err:
        find_weight("alex")
    msg = str(err.value)
    assert "missing alexnet-owt-7be5be79.pth" in msg and "https://download.pytorch.org/models/" in msg
    assert "--download-weights" in msg and "\n" not in msg
    assert requests == [] and not _cache(tmp_path).exists()


def test_download_argument_weights_dir_target_and_a_folder_mirror(mirror, tmp_path, monkeypatch, capsys):
    _, served, requests, _ = mirror
    monkeypatch.setenv(weights_download.ENV_MIRROR, str(served))  # a plain folder, as on an air-gapped site
    monkeypatch.setattr("rich.console.Console.is_terminal", property(lambda self: True))  # the live bar's path
    path = find_weight("alex", tmp_path / "wdir", download=True)
    assert path == tmp_path / "wdir" / ALEX and path.read_bytes() == (served / ALEX).read_bytes()
    assert requests == [] and not weights_download.requested()  # an argument: nothing global stays set
    captured = capsys.readouterr()
    assert f"download {ALEX}" in captured.err and f"downloaded {ALEX}" in captured.out


def test_http_errors_and_bad_settings_are_one_line(mirror, tmp_path, monkeypatch):
    base, served, _, _ = mirror
    (served / ALEX).unlink()
    with pytest.raises(UserError) as err:
        find_weight("alex", download=True)
    assert f"cannot download {ALEX} from {base}/{ALEX}: HTTP 404" in str(err.value) and "\n" not in str(err.value)
    assert list(_cache(tmp_path).iterdir()) == []
    monkeypatch.setenv(weights_download.ENV_DOWNLOAD, "maybe")
    with pytest.raises(UserError, match="LITEVAE_DOWNLOAD_WEIGHTS must be 1 or 0"):
        find_weight("alex")
    monkeypatch.setenv(weights_download.ENV_DOWNLOAD, "1")
    monkeypatch.setenv(weights_download.ENV_MIRROR, "ftp://mirror/weights")
    with pytest.raises(UserError, match="LITEVAE_WEIGHTS_MIRROR must be"):
        find_weight("alex")


def test_pins_cover_every_weight_and_match_torchvisions_name_prefixes():
    for wf in weights_download.WEIGHTS.values():
        pin = weights_download.PINNED[wf.filename]
        assert len(pin.sha256) == 64 and int(pin.sha256, 16) >= 0 and pin.size > 1_000_000
        stem = wf.filename.rsplit(".", 1)[0]
        if wf.url.startswith("https://download.pytorch.org/"):  # torchvision: name-<first 8 hex of sha256>.pth
            assert pin.sha256.startswith(stem.rsplit("-", 1)[1])


@pytest.mark.parametrize("command, preset", [("pretrain", "demo"), ("finetune", "demo-finetune")])
def test_train_commands_and_train_pass_download_weights_to_the_loop(monkeypatch, tmp_path, command, preset):
    from litevae_cli.training import loop

    seen = []
    monkeypatch.setattr(loop, "run", lambda rt, cfg, data, out, **kw: seen.append(kw["download_weights"]) or 0)
    monkeypatch.delenv(weights_download.ENV_DOWNLOAD, raising=False)
    for flag in ([], ["--download-weights"]):
        result = runner.invoke(app, [command, "--preset", preset, "--data", "sample", "--out", str(tmp_path / "run"),
                                     "--device", "cpu", "--precision", "fp32", *flag])
        assert result.exit_code == 0, result.output
    assert loop.train(command, preset, "sample", tmp_path / "run", device="cpu", precision="fp32",
                      download_weights=True) == 0
    assert seen == [False, True, True] and not weights_download.requested()  # an argument, never a global flag
