"""A Hub id as MODEL (`files.hub`): refused without the download permission; with it, fetched from a fake
Hub on 127.0.0.1 ($HF_ENDPOINT) and kept only when the safetensors bytes match the sha256 the server declares
(X-Linked-Etag on a 302, as the Hub answers); a folder fetched once is reused without a request."""

import functools
import hashlib
import http.server
import json
import threading

import pytest
import torch
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.errors import UserError
from litevae_cli.files.model_file import load_autoencoder

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKL  # noqa: E402

runner = CliRunner()
CFG = dict(block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, norm_num_groups=8, latent_channels=4,
           scaling_factor=0.5)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake Hub serving owner/vae (root) and owner/pipe (vae/ subfolder); `declared` maps a path to the
    sha256 the server claims (default: the true one). Yields (served folder, requests, declared)."""
    served = tmp_path / "served"
    torch.manual_seed(0)
    vae = AutoencoderKL(**CFG)
    vae.save_pretrained(served / "owner" / "vae" / "resolve" / "main")
    vae.save_pretrained(served / "owner" / "pipe" / "resolve" / "main" / "vae")
    requests, declared = [], {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):  # the Hub: 302 to the CDN, with the LFS sha256 in X-Linked-Etag
            requests.append(("HEAD", self.path))
            local = served / self.path.lstrip("/")
            if not local.is_file():
                self.send_error(404)
                return
            sha = declared.get(self.path, hashlib.sha256(local.read_bytes()).hexdigest())
            self.send_response(302)
            self.send_header("Location", self.path)
            if sha:
                self.send_header("X-Linked-Etag", f'"{sha}"')
            self.end_headers()

        def do_GET(self):
            requests.append(("GET", self.path))
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("LITEVAE_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LITEVAE_DOWNLOAD_WEIGHTS", raising=False)
    try:
        yield served, requests, declared
    finally:
        server.shutdown()
        server.server_close()


def test_without_permission_nothing_is_fetched_and_the_message_says_how(hub, tmp_path):
    _, requests, _ = hub
    with pytest.raises(UserError, match="--download-weights") as err:
        load_autoencoder("owner/vae")
    assert "huggingface-cli download owner/vae" in str(err.value) and "\n" not in str(err.value)
    assert requests == [] and not (tmp_path / "cache").exists()


def test_fetched_verified_recorded_and_reused(hub, tmp_path, make_images):
    served, requests, _ = hub
    loaded = load_autoencoder("owner/vae", download=True)
    assert loaded.spec.encoder == "sd-vae-encoder" and loaded.spec.latent_factors["scaling_factor"] == 0.5
    folder = tmp_path / "cache" / "owner--vae"
    record = json.loads((folder / "litevae-download.json").read_text())
    weights = served / "owner/vae/resolve/main/diffusion_pytorch_model.safetensors"
    assert record["files"]["diffusion_pytorch_model.safetensors"]["sha256"] == hashlib.sha256(
        weights.read_bytes()).hexdigest() and record["files"]["diffusion_pytorch_model.safetensors"]["verified"]
    n = len(requests)
    load_autoencoder("owner/vae", download=True)  # reused: no request
    assert len(requests) == n
    # a pipeline repository's vae/ subfolder, through the CLI with the environment's permission
    result = runner.invoke(app, ["eval", "owner/pipe/vae", "--data", str(make_images(n=2, size=32)), "--metrics",
                                 "psnr", "--resolution", "32", "--device", "cpu"],
                           env={"LITEVAE_DOWNLOAD_WEIGHTS": "1"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "owner--pipe--vae" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.parametrize("claim", ["0" * 64, ""])
def test_a_mismatched_or_missing_declared_hash_is_refused_and_nothing_kept(hub, tmp_path, claim):
    _, _, declared = hub
    declared["/owner/vae/resolve/main/diffusion_pytorch_model.safetensors"] = claim
    result = runner.invoke(app, ["eval", "owner/vae", "--data", "sample", "--metrics", "psnr", "--device", "cpu",
                                 "--download-weights"])
    text = result.output.strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert ("sha256 mismatch" if claim else "declares no sha256") in text
    folder = tmp_path / "cache" / "owner--vae"
    assert not folder.exists() or not any(folder.iterdir())
