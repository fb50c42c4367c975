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


def _readme_demo_table() -> dict[str, dict[str, str]]:
    """The README's demo-preset table: {preset: {column: cell}}."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| demo preset |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_demo_presets_are_what_the_readme_states():
    from litevae_cli.config import load_config

    rows = _readme_demo_table()
    assert set(rows) == {"demo", "demo-finetune"}
    for name, row in rows.items():
        cfg = load_config(name)
        assert row["model"] == f"{cfg.model.encoder} + {cfg.model.decoder} {cfg.model.decoder_kwargs['channels']} " \
                               f"{tuple(cfg.model.decoder_kwargs['mults'])}, nz {cfg.model.nz}", name
        assert int(row["steps"]) == cfg.train.steps and int(row["batch"]) == cfg.train.batch_size, name
        assert int(row["crop"]) == cfg.data.resolution, name
        assert float(row["lr"]) == cfg.optim.lr and float(row["KL weight"]) == cfg.loss.kl, name
        assert float(row["SMC gain lr x"]) == cfg.optim.smc_gain_lr_mult, name
        assert float(row["EMA"]) == cfg.train.ema_decay, name
        assert float(row["log-variance init"]) == cfg.model.encoder_kwargs["logvar_init"], name
        assert row["discriminator"] == (cfg.discriminator.name or "none"), name
