"""`make reproduce` cannot rot: `benchmarks/reproduce/reproduce.py --quick` runs every arm end to end (real CLI
training, eval, per-image PSNR, latent vectors, decoder hooks, encoder img/s), resumes, and its report has a
paired interval and a verdict per claim; the arms differ in one factor each; `--scale paper` is checked
against the paper's recipe table."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce" / "reproduce.py"
sys.path.insert(0, str(ROOT / "benchmarks" / "reproduce"))

from reproduce_report import CLAIMS  # noqa: E402


def test_quick_run_trains_every_arm_and_reports_every_claim(tmp_path):
    out = tmp_path / "repro"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--jobs", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    runs = {r["arm"]: r for r in res["runs"]}
    assert set(runs) == {"base", "sd-encoder", "gn-decoder", "full-res", "full-res-px", "no-hf", "no-wavelet",
                         "no-gaussian"}
    assert not {"chelsea", "coffee"} & set(res["holdout_photos"]) and len(res["holdout_photos"]) >= 4
    for r in runs.values():  # the quick scale evaluates the first 3 held-out photos
        assert 5 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 and r["images"] == 3
        per = r["per_image"]["64"]
        assert len(per["psnr"]) == r["images"] and abs(sum(per["psnr"]) / len(per["psnr"]) - r["psnr"]) < 1e-6
        assert r["activation_ratio"]["max"] >= r["activation_ratio"]["mean"] > 1
        assert r["fingerprint"]["arm"] == res["fingerprint"]["arms"][r["arm"]]
    # Table 5: equal steps (the verdict) and equal pixels (a quarter of the phase-A steps at twice the side).
    assert (runs["full-res"]["pretrain_res"], runs["base"]["pretrain_res"]) == (64, 32)
    assert runs["full-res"]["pretrain_steps"] == runs["base"]["pretrain_steps"]
    assert runs["full-res-px"]["pretrain_steps"] == runs["base"]["pretrain_steps"] // 4
    for arm in ("base", "sd-encoder"):  # the encoder arms carry the latent vectors of P Table 6
        assert runs[arm]["latent_crops"] == 4 * 3 and runs[arm]["latent_positions"] == 64
    tp = res["encoder_throughput"]
    assert tp["fingerprint"]["recipe"] == res["fingerprint"]["fingerprint"]
    for key, lo, hi in (("params", 5.0, 6.0), ("gflops_64", 5.0, 6.0)):  # ~5-6x
        assert lo < tp["sd-vae"][key] / tp["litevae"][key] < hi
    report = (out / "REPRODUCTION.md").read_text()
    for claim in CLAIMS:
        if claim.key in res["scale_settings"]["claims"] and claim.key != "t2a-b":  # t2a-b: optional arms
            assert f"## {claim.title}" in report
    assert report.count("**Verdict (") == 8 and "95% interval" in report and "reproduce-fingerprint" in report
    assert "Does the KL term act in these runs? Posterior std" in report
    # The report it wrote passes the freshness check against this checkout.
    from reproduce_check import check

    assert check(out / "REPRODUCTION.md")[0] == 0
    # Rerunning the same command trains nothing: every job's result is reused.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "9 of 9 jobs already done; running 0" in again.stdout
    # --remeasure measures the final checkpoints again and keeps the training record; eval is deterministic.
    remeasured = subprocess.run([*cmd, "--remeasure"], capture_output=True, text=True, timeout=600)
    assert remeasured.returncode == 0, remeasured.stdout[-2000:] + remeasured.stderr[-2000:]
    res2 = json.loads((out / "results.json").read_text())
    for r in res2["runs"]:
        old = runs[r["arm"]]
        assert (r["psnr"], r["pretrain_s"], r["finetune_s"]) == (old["psnr"], old["pretrain_s"], old["finetune_s"])
    assert [(i["jobs_run"], i["remeasure"]) for i in res2["invocations"]] == [(9, False), (0, False), (8, True)]


def test_bad_options_fail_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--jobs", "0", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "--jobs must be at least 1" in run.stderr and "Traceback" not in run.stderr


def test_every_arm_changes_one_factor_and_the_smc_gain_lr_is_1x_everywhere():
    from recipe import SCALES, build_arm_jobs, phase_plan

    from litevae_cli.config import resolve_config

    scale = SCALES["cpu"]
    jobs = {j["arm"]: j for j in build_arm_jobs(scale, list(scale.arms), (0,), Path("o"), "sample", "h")}

    def resolved(arm):
        return [resolve_config(p["preset"], p["sets"], p["flags"], phase=p["command"]) for p in phase_plan(jobs[arm])]

    base = resolved("base")
    for arm in scale.arms:
        for cfg in resolved(arm):
            assert cfg.optim.smc_gain_lr_mult == 1.0, arm
    gn = resolved("gn-decoder")[0].model
    assert gn.decoder == "sd-vae-decoder" and gn.decoder_kwargs["mid_attention"] is False
    assert gn.decoder_kwargs["norm_groups"] == 8 and gn.decoder_kwargs["channels"] == 32  # 4 channels per group
    assert gn.encoder == base[0].model.encoder and gn.encoder_kwargs == base[0].model.encoder_kwargs
    for arm, key, value in (("no-hf", "wavelet", 0), ("no-wavelet", "wavelet", 0), ("no-gaussian", "gaussian", 0)):
        assert getattr(resolved(arm)[0].loss, key) == value
    assert resolved("no-wavelet")[0].loss.gaussian == base[0].loss.gaussian
    assert resolved("no-gaussian")[0].loss.wavelet == base[0].loss.wavelet
    assert [c.data.resolution for c in resolved("full-res")] == [64, 64]
    assert [c.train.steps for c in resolved("full-res")] == [c.train.steps for c in base]  # equal steps


def test_groupnorm_and_smc_decoders_differ_only_in_normalisation():
    """Same convolutions (shapes, order), no attention in either; the GroupNorm arm adds only norm layers."""
    import torch.nn as nn

    from litevae_cli.models import create_model
    from recipe import GN_DEC_CPU

    smc = create_model("smc-decoder", nz=12, channels=32, mults=[1, 2, 2, 2])
    gn = create_model("sd-vae-decoder", nz=12, **GN_DEC_CPU)

    def convs(m):  # every convolution kernel (plain or self-modulated), in order
        return [tuple(p.shape) for p in m.parameters() if p.ndim == 4]

    assert convs(smc) == convs(gn)
    norms = [x for x in gn.modules() if isinstance(x, nn.GroupNorm)]
    assert norms and all(n.num_channels // n.num_groups in (4, 8) for n in norms)
    assert not any("Attn" in type(x).__name__ for x in [*gn.modules(), *smc.modules()])


# The paper's recipe per arm, from its text (App. F: batch 16, Adam 1e-4 (0.5, 0.9); ImageNet 128 models 200k
# steps; Table 5: 100k@128 + 50k@256 vs 150k@256, nz 4; Table 1: 256 px, nz 12; every metric reported).
PAPER = {  # arm: (phase A res, steps, phase B res, steps, nz, encoder, decoder, eval px)
    "base": (128, 200_000, 0, 0, 12, "litevae-b", "smc-decoder", 128),
    "gn-decoder": (128, 200_000, 0, 0, 12, "litevae-b", "sd-vae-decoder", 128),
    "no-hf": (128, 200_000, 0, 0, 12, "litevae-b", "smc-decoder", 128),
    "no-wavelet": (128, 200_000, 0, 0, 12, "litevae-b", "smc-decoder", 128),
    "no-gaussian": (128, 200_000, 0, 0, 12, "litevae-b", "smc-decoder", 128),
    "s-encoder": (128, 200_000, 0, 0, 12, "litevae-s", "sd-vae-decoder", 128),
    "b-encoder": (128, 200_000, 0, 0, 12, "litevae-b", "sd-vae-decoder", 128),
    "vae-encoder": (128, 200_000, 0, 0, 12, "sd-vae-encoder", "sd-vae-decoder", 128),
    "t1-litevae": (128, 100_000, 256, 50_000, 12, "litevae-b", "sd-vae-decoder", 256),
    "t1-vae": (128, 100_000, 256, 50_000, 12, "sd-vae-encoder", "sd-vae-decoder", 256),
    "t5-tuned": (128, 100_000, 256, 50_000, 4, "litevae-b", "sd-vae-decoder", 256),
    "t5-full": (256, 150_000, 0, 0, 4, "litevae-b", "sd-vae-decoder", 256),
    "t5-128full": (128, 150_000, 0, 0, 4, "litevae-b", "sd-vae-decoder", 256),
}


def test_paper_scale_runs_every_arm_as_the_paper_did(tmp_path):
    from reproduce import build_jobs, parse_args
    from recipe import SCALES, phase_plan

    from litevae_cli.config import resolve_config

    args = parse_args(["--scale", "paper", "--data", str(tmp_path), "--holdout", str(tmp_path), "--optional"])
    scale = SCALES["paper"]
    jobs, tput = build_jobs(args, scale, tmp_path, str(tmp_path))
    assert set(scale.arms) == set(PAPER) and {j["seed"] for j in jobs} == {0, 1, 2}
    for j in (j for j in jobs if j["seed"] == 0):
        a_res, a_steps, b_res, b_steps, nz, enc, dec, ev = PAPER[j["arm"]]
        assert (j["pretrain_res"], j["pretrain_steps"], j["finetune_res"], j["finetune_steps"]) == \
            (a_res, a_steps, b_res, b_steps), j["arm"]
        assert j["metrics"] == ["rfid", "lpips", "psnr", "ssim"] and j["eval_res"][0] == ev
        cfgs = [resolve_config(p["preset"], p["sets"], p["flags"], phase=p["command"]) for p in phase_plan(j)]
        for cfg in cfgs:
            assert (cfg.model.nz, cfg.model.encoder, cfg.model.decoder) == (nz, enc, dec), j["arm"]
            assert (cfg.train.batch_size, cfg.optim.lr, list(cfg.optim.betas)) == (16, 1e-4, [0.5, 0.9])
            assert cfg.optim.smc_gain_lr_mult == 1.0 and cfg.loss.lpips == 1.0
        assert cfgs[-1].discriminator.name == "unet-disc-s" and cfgs[-1].loss.adversarial > 0  # the last phase
    assert tput["batch"] == 32 and tput["litevae_encoder"] == "litevae-b"  # P Table 3: batch 32


def test_both_encoders_take_the_same_logvar_init():
    """The matched encoder comparison starts both posteriors at the same std (the repro presets' -6)."""
    import torch

    from litevae_cli.models import create_model

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for name, kw in (("sd-vae-encoder", {"channels": 8, "mults": [1, 1, 1, 1]}), ("litevae-tiny", {})):
        stds = [create_model(name, nz=4, logvar_init=v, **kw)(x).std.mean().item() for v in (0.0, -6.0)]
        assert stds[1] < 0.1 < 0.5 < stds[0], (name, stds)
    assert math.isclose(json.loads(__import__("recipe").sets_json("k", {"a": 1}).split("=", 1)[1])["a"], 1)


def test_the_fingerprinted_config_is_the_one_the_worker_runs(capsys):
    """`recipe.resolved_arm` (the fingerprint's input) equals what `litevae pretrain/finetune --dry-run` prints
    for the worker's own arguments (`reproduce_worker.phase_args`)."""
    import yaml
    from recipe import SCALES, build_arm_jobs, phase_plan, resolved_arm
    from reproduce_worker import phase_args

    from litevae_cli.cli import app

    scale = SCALES["cpu"]
    job = build_arm_jobs(scale, ["gn-decoder"], (1,), Path("o"), "sample", "h")[0]
    fingerprinted = resolved_arm(job)["phases"]
    for phase, want in zip(phase_plan(job), fingerprinted):
        capsys.readouterr()
        app([*phase_args(job, phase, Path("o") / phase["command"]), "--dry-run"], standalone_mode=False)
        printed = yaml.safe_load(capsys.readouterr().out)
        printed.pop("run", None)
        assert printed == yaml.safe_load(yaml.safe_dump(want["config"])), phase["command"]


def test_posterior_std_is_read_back_from_the_saved_latents(tmp_path):
    """Table 6's 'does the KL term act' line: sample - mean of the saved latents gives the posterior std."""
    import numpy as np

    from reproduce_report import posterior_std

    rng = np.random.default_rng(0)
    runs = []
    for seed, std in ((0, 0.05), (1, 0.2)):
        mean = rng.standard_normal((40, 64, 12)).astype(np.float32)
        sample = mean + std * rng.standard_normal(mean.shape).astype(np.float32)
        np.savez(tmp_path / f"l{seed}.npz", mean=mean, sample=sample)
        runs.append({"arm": "base", "seed": seed, "latents_file": str(tmp_path / f"l{seed}.npz")})
    got = posterior_std({"runs": runs}, "base")
    assert set(got) == {0, 1} and abs(got[0] - 0.05) < 2e-3 and abs(got[1] - 0.2) < 5e-3
