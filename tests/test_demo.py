"""`make demo` at toy size: scripts/demo.sh runs every documented subcommand end to end
(pretrain -> finetune -> eval -> reconstruct -> inspect-latents -> encode-dataset)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_pipeline_at_toy_size(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, DEMO_OUT=str(out), DEMO_PRETRAIN_STEPS="3", DEMO_FINETUNE_STEPS="2",
               DEMO_EVAL_RES="64", PY=sys.executable, LITEVAE=f"{sys.executable} -m litevae_cli")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "pretrain" / "checkpoints" / "last.pt").is_file()
    assert (out / "finetune" / "checkpoints" / "last.pt").is_file()
    report = json.loads((out / "eval.json").read_text())
    text = json.dumps(report)
    assert "psnr" in text and "ssim" in text
    pngs = list((out / "reconstructions").glob("*.png"))
    assert len(pngs) >= 4 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (out / "latents" / "latent_histograms.png").is_file()
    stats = json.loads((out / "shards" / "stats.json").read_text())
    shards = sorted(str(p) for p in (out / "shards").glob("latents-*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert len(samples) == stats["count"] == 9  # sample-all: 9 photographs
    assert "done in" in run.stdout
