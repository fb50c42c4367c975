"""A real 2-process torchrun run (gloo on CPU): both ranks end with identical weights, only rank 0 writes.

The discriminator is on, so its DDP wrapper and the frozen-D generator step are exercised too.
Each rank dumps its final weights (discriminator: parameters) through the loop's LITEVAE_TEST_RANK_DUMP hook (outside the run dir).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

TINY = {
    "name": "tiny-ddp", "phase": "pretrain",
    "model": {"encoder": "litevae-tiny", "decoder": "smc-decoder-tiny", "nz": 4},
    "discriminator": {"name": "patchgan-tiny"},
    "data": {"resolution": 32, "workers": 0},
    "loss": {"lpips": 0.0},
    "train": {"steps": 3, "batch_size": 4, "precision": "fp32", "ema_decay": 0.9},
    "log": {"every": 1, "sample_every": 3, "checkpoint_every": 2, "tensorboard": False},
}


@pytest.mark.slow
def test_torchrun_two_ranks_end_identical_and_only_rank0_writes(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(TINY))
    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
    out, dump = tmp_path / "run", tmp_path / "dump"
    env = {**os.environ, "LITEVAE_TEST_RANK_DUMP": str(dump), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "litevae_cli", "pretrain", "--preset", str(preset), "--data", str(data), "--out", str(out),
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 ranks" in proc.stdout

    r0 = torch.load(dump / "rank0.pt", weights_only=True)
    r1 = torch.load(dump / "rank1.pt", weights_only=True)
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 3
    for part in ("model", "discriminator"):
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), part
        assert all(torch.equal(r0[part][k], ckpt[part][k]) for k in r0[part]), part
    # Every rank's RNG is in the checkpoint; each rank read 3 steps x 2 images of its own share.
    assert ckpt["rng"]["world_size"] == 2 and len(ckpt["rng"]["ranks"]) == 2
    assert ckpt["data_position"] == {"per_rank": 6, "world_size": 2}
    assert not torch.equal(ckpt["rng"]["ranks"][0]["torch"], ckpt["rng"]["ranks"][1]["torch"])

    # Only rank 0 wrote: one metrics line per step, and nothing but the expected files (rank 0 held the lock).
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [".litevae.lock", "checkpoints/last.pt", "checkpoints/step-0000002.pt", "config.yaml",
                     "metrics.jsonl", "samples/step-0000003.png"]
