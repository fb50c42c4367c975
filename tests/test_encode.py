"""encode-dataset and the latent reader: round trip through plain webdataset, stats.json against a direct
computation, interruption + resume (in process, with a torn journal line, and a real SIGKILL), CLI errors."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

import litevae_cli.latents.encode as E
from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
from litevae_cli.cli import app
from litevae_cli.data import eval_transform, load_image
from litevae_cli.latents.reader import LatentShards, encode_key, list_shards, moments_from_npy
from litevae_cli.models import build_autoencoder

runner = CliRunner()
RES = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    ema = {k: v * 1.01 if v.is_floating_point() else v for k, v in ae.state_dict().items()}
    return str(save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(),
                            "model": ae.state_dict(), "ema": ema, "step": 5, "config": {}},
                           tmp_path_factory.mktemp("model") / "tiny.pt"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes, 7 good images (one name with dots) and one corrupt file."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    names = ["cat/a.png", "cat/b.v2.png", "cat/c.jpg", "dog/d.png", "dog/e.png", "dog/f.png", "dog/g.png"]
    for i, n in enumerate(names):
        (root / n).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36 + i, 44, 3), dtype=np.uint8)).save(root / n)
    (root / "dog" / "bad.png").write_bytes(b"not a png")
    return str(root)


def _encode(ckpt, data, out, *extra):
    args = ["encode-dataset", ckpt, "--data", data, "--out", str(out), "--resolution", str(RES), "--batch-size", "2",
            "--shard-size", "3", "--workers", "0", "--device", "cpu", *extra]
    return runner.invoke(app, args)


def _read_plain(out):
    """Every sample through plain webdataset (no litevae code)."""
    return list(wds.WebDataset(sorted(str(p) for p in out.glob("latents-*.tar")), shardshuffle=False))


def _direct_moments(ckpt, path, dtype):
    from litevae_cli.files.model_file import load_autoencoder

    enc = load_autoencoder(ckpt).model.encoder
    x = eval_transform(load_image(path), RES)[0][None]
    with torch.no_grad():
        post = enc(torch.cat([x, x.flip(-1)]))
    return torch.cat([post.mean, post.logvar], 1).to(dtype).float()


def test_round_trip_plain_webdataset_and_stats(ckpt, folder, tmp_path):
    out = tmp_path / "lat"
    res = _encode(ckpt, folder, out, "--flip", "--dtype", "fp16")
    assert res.exit_code == 0, res.output
    assert "EMA weights" in res.output and "7 in total" in res.output and "1 skipped" in res.output
    samples = _read_plain(out)
    keys = ["cat/a", "cat/b%2Ev2", "cat/c", "dog/d", "dog/e", "dog/f", "dog/g"]
    assert [s["__key__"] for s in samples] == [k for k in keys]  # no dots: the '.' of b.v2 is escaped
    assert len(samples) == 7 and len(list_shards(str(out))) == 3
    for s in samples:
        assert {"moments.npy", "moments_flip.npy", "json", "cls"} <= set(s)
        m = np.load(io.BytesIO(s["moments.npy"]))
        assert m.dtype == np.float16 and m.shape == (8, RES // 8, RES // 8)
        meta = json.loads(s["json"])
        assert encode_key(meta["key"]) == s["__key__"] and int(s["cls"]) == (0 if meta["key"].startswith("cat") else 1)
        assert meta["orig_size"][0] == 44 and len(meta["crop_box"]) == 4 and meta["moments_dtype"] == "fp16"
    # the stored moments are the model's (EMA) moments of the eval transform, flip included
    s = samples[1]
    direct = _direct_moments(ckpt, json.loads(s["json"])["source"], torch.float16)
    assert torch.equal(moments_from_npy(s["moments.npy"], "fp16"), direct[0])
    assert torch.equal(moments_from_npy(s["moments_flip.npy"], "fp16"), direct[1])
    # stats.json == a direct float64 computation over the stored latent means
    stats = json.loads((out / "stats.json").read_text())
    means = torch.stack([torch.from_numpy(np.load(io.BytesIO(s["moments.npy"]))[:4].astype(np.float64))
                         for s in samples])
    assert stats["count"] == 7 and stats["skipped"] == 1 and stats["nz"] == 4 and stats["resolution"] == RES
    assert len(stats["model"]["sha256"]) == 64 and stats["model"]["ema"] is True and stats["crop"] == "center"
    assert np.allclose(stats["channel_mean"], means.mean((0, 2, 3)).numpy(), rtol=0, atol=1e-12)
    assert np.allclose(stats["channel_std"], means.std((0, 2, 3), unbiased=False).numpy(), rtol=0, atol=1e-12)
    assert abs(stats["global_std"] - float(means.std(unbiased=False))) < 1e-12
    assert abs(stats["scaling_factor"] - 1 / float(means.std(unbiased=False))) < 1e-9
    assert abs(stats["shift_factor"] - float(means.mean())) < 1e-12
    assert (out / "skipped.txt").read_text().startswith("dog/bad\t")
    # reader: mean mode applies (z - shift) * scale; flip_prob=1 reads the flipped moments
    z, meta = next(iter(LatentShards(str(out), sample=False)))
    want = (means[0].float() - stats["shift_factor"]) * stats["scaling_factor"]
    assert meta == {"key": "cat/a", "cls": 0} and torch.allclose(z, want, atol=1e-6)
    zf, _ = next(iter(LatentShards(str(out), sample=False, flip_prob=1.0, scale=1.0, shift=0.0)))
    assert torch.equal(zf, moments_from_npy(samples[0]["moments_flip.npy"], "fp16")[:4])


def test_bf16_reader_and_shard_source_keys(ckpt, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    with wds.TarWriter(str(src / "part.v2-000000.tar")) as w:  # the dot reaches our keys via the shard stem
        for k in ("x1", "x2", "y"):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
            w.write({"__key__": k, "png": buf.getvalue(), "cls": b"3"})
    out = tmp_path / "lat"
    assert _encode(ckpt, str(src / "part.v2-000000.tar"), out, "--dtype", "bf16").exit_code == 0
    samples = _read_plain(out)
    assert [s["__key__"] for s in samples] == ["part%2Ev2-000000/x1", "part%2Ev2-000000/x2", "part%2Ev2-000000/y"]
    assert np.load(io.BytesIO(samples[0]["moments.npy"])).dtype == np.uint16  # bf16 bit pattern
    z, meta = next(iter(LatentShards(str(out), sample=False, scale=1.0, shift=0.0)))
    assert meta == {"key": "part.v2-000000/x1", "cls": 3} and z.dtype == torch.float32 and torch.isfinite(z).all()
    ds = LatentShards(str(out), sample=False, scale=1.0, shift=0.0)  # 2 consumers split the samples
    got = [m["key"] for c in range(2) for s in ds._raw(c, 2) for m in [ds._convert(s, torch.Generator())[1]]]
    assert sorted(got) == sorted(m["key"] for _, m in LatentShards(str(out), scale=1.0, shift=0.0))


def _fail_on_call(monkeypatch, n):
    calls = {"n": 0}
    real = E.encode_batch

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt  # what Ctrl-C in the middle of a batch looks like
        return real(*a, **k)

    monkeypatch.setattr(E, "encode_batch", flaky)


def test_interrupt_then_resume_is_exact(ckpt, folder, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    assert _encode(ckpt, folder, ref).exit_code == 0
    out = tmp_path / "lat"
    _fail_on_call(monkeypatch, 4)  # 3 batches done (a b c, bad, d e): shard 0 committed, shard 1 partial
    res = _encode(ckpt, folder, out)
    assert res.exit_code == 130 and "interrupted" in res.output
    assert sorted(p.name for p in out.glob("latents-*.tar")) == ["latents-000000.tar", "latents-000001.tar"]
    with open(out / "progress-r0.jsonl", "a") as f:
        f.write('{"shard": "latents-0000')  # a torn journal line, as a kill during the append leaves it
    monkeypatch.undo()
    res = _encode(ckpt, folder, out)
    assert res.exit_code == 0, res.output
    assert "discarded partial shard latents-000001.tar" in res.output and "resuming" in res.output
    got, want = _read_plain(out), _read_plain(ref)
    assert [s["__key__"] for s in got] == [s["__key__"] for s in want]  # same order, no duplicate, none missing
    assert all(a["moments.npy"] == b["moments.npy"] for a, b in zip(got, want))
    s_got, s_ref = (json.loads((d / "stats.json").read_text()) for d in (out, ref))
    assert (s_got["count"], s_got["skipped"]) == (s_ref["count"], s_ref["skipped"]) == (7, 1)
    for k in ("channel_mean", "channel_std", "global_std", "scaling_factor", "shift_factor"):
        assert np.allclose(s_got[k], s_ref[k], rtol=1e-12, atol=1e-14), k  # float64 sums, grouped differently
    assert (out / "skipped.txt").read_text() == (ref / "skipped.txt").read_text()
    # a complete output reruns to the same result; --overwrite starts over
    again = _encode(ckpt, folder, out)
    assert again.exit_code == 0 and "encoded 0 images now" in again.output and "7 in total" in again.output
    fresh = _encode(ckpt, folder, out, "--overwrite")
    assert fresh.exit_code == 0 and "encoded 7 images now" in fresh.output


@pytest.mark.slow
def test_sigkill_then_resume(ckpt, tmp_path):
    """A real kill -9 of the CLI after its first committed shard; rerunning completes it exactly."""
    data = tmp_path / "imgs"
    data.mkdir()
    rng = np.random.default_rng(2)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(data / f"{i:03d}.png")
    out = tmp_path / "lat"
    cmd = [sys.executable, "-m", "litevae_cli", "encode-dataset", ckpt, "--data", str(data), "--out", str(out),
           "--resolution", "16", "--batch-size", "1", "--shard-size", "2", "--workers", "0", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    journal = out / "progress-r0.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:  # header + 2 committed shards
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    keys = [s["__key__"] for s in _read_plain(out)]
    assert keys == [f"{i:03d}" for i in range(40)]
    assert json.loads((out / "stats.json").read_text())["count"] == 40
    assert killed, "the encoder finished before it could be killed; the resume above did not test a kill"


def test_cli_errors_are_one_line(ckpt, folder, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    cases = [
        ([ckpt, "--data", str(tmp_path / "missing")], "missing"),
        ([str(tmp_path / "garbage.pt"), "--data", folder], "is not a checkpoint, export or diffusers folder"),
        ([str(tmp_path / "nope.pt"), "--data", folder], "model not found"),
        ([ckpt, "--data", str(tmp_path / "empty")], "no images"),
        ([ckpt, "--data", folder, "--dtype", "int8"], "--dtype must be one of"),
    ]
    for args, needle in cases:
        res = runner.invoke(app, ["encode-dataset", *args, "--out", str(tmp_path / "o"), "--device", "cpu"])
        assert res.exit_code == 2 and needle in res.output, (args, res.output)
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 2
    # resuming with different settings is refused, pointing at --overwrite
    assert _encode(ckpt, folder, tmp_path / "lat", "--limit", "2").exit_code == 0
    res = _encode(ckpt, folder, tmp_path / "lat", "--dtype", "fp32")
    assert res.exit_code == 2 and "different settings" in res.output and "--overwrite" in res.output


@pytest.mark.slow
def test_torchrun_two_ranks(ckpt, folder, tmp_path):
    """2 ranks (gloo on CPU): per-rank shard names, disjoint keys, stats reduced = the 1-process stats."""
    ref = tmp_path / "ref"
    assert _encode(ckpt, folder, ref).exit_code == 0
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "litevae_cli", "encode-dataset", ckpt, "--data", folder, "--out", str(out), "--resolution", str(RES),
           "--batch-size", "2", "--shard-size", "3", "--workers", "0", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    names = sorted(p.name for p in out.glob("latents-*.tar"))
    assert names and all(n.startswith(("latents-r0-", "latents-r1-")) for n in names)
    assert {n[:10] for n in names} == {"latents-r0", "latents-r1"}
    keys = [s["__key__"] for s in _read_plain(out)]
    assert len(keys) == len(set(keys)) == 7 and set(keys) == {s["__key__"] for s in _read_plain(ref)}
    got, want = (json.loads((d / "stats.json").read_text()) for d in (out, ref))
    assert got["count"] == 7 and got["skipped"] == 1 and got["world_size"] == 2
    # Exact reduction, but the two runs batch differently, so float32 conv results differ at ~1e-8, and
    # one of them can round the other way to fp16 (the stored dtype): one fp16 ulp (4.9e-4 at 0.5) over
    # 7 x 16 latent elements moves a channel mean by up to ~4e-6. A lost or double-counted rank would
    # be off by >1e-2.
    assert np.allclose(got["channel_mean"], want["channel_mean"], rtol=0, atol=1e-5)
    assert abs(got["scaling_factor"] / want["scaling_factor"] - 1) < 1e-6
    assert (out / "skipped.txt").read_text() == (ref / "skipped.txt").read_text()


def test_a_constant_latent_channel_writes_null_factors_not_nan(folder, tmp_path):
    """A dead encoder (every weight 0: a constant posterior mean) has std 0: stats.json stays valid JSON,
    its undefined factors are null with a warning line, and export --stats refuses them in one line."""
    torch.manual_seed(0)
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    state = {k: (torch.zeros_like(v) if k.startswith("encoder.") and v.is_floating_point() else v)
             for k, v in ae.state_dict().items()}
    dead = str(save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(),
                            "model": state, "ema": None, "step": 1, "config": {}}, tmp_path / "dead.pt"))
    res = _encode(dead, folder, tmp_path / "lat")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "written as null" in res.output
    doc = json.loads((tmp_path / "lat" / "stats.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert doc["normalization"]["mean"]["scaling_factor"] is None
    res = runner.invoke(app, ["export", dead, str(tmp_path / "x.safetensors"), "--stats",
                              str(tmp_path / "lat" / "stats.json")])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
