"""The issue-22 benchmark sections (compiled encoders, op-kind profile, compiled train step) run end to end through
`run.py --smoke` with tiny models and dynamo's tracing-only `eager` backend, and the op-kind classifier names the
kinds of real eager op names and inductor kernel names."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEED = ROOT / "benchmarks" / "speed"
sys.path.insert(0, str(SPEED))
sys.path.insert(0, str(ROOT / "benchmarks"))

from op_kinds import classify, fused_ops  # noqa: E402

KINDS = {"convolution", "norm", "activation", "matmul", "elementwise", "memory", "compile wrapper", "other"}


def test_classifier_names_eager_ops_from_a_real_profile():
    # Names as torch.profiler reported them for litevae-tiny and a small diffusers encoder (bf16, channels_last).
    expected = {"aten::mkldnn_convolution": "convolution", "aten::conv2d": "convolution",
                "aten::_convolution": "convolution", "aten::native_group_norm": "norm", "aten::group_norm": "norm",
                "aten::silu_": "activation", "aten::silu": "activation", "aten::cat": "memory",
                "aten::copy_": "memory", "aten::_to_copy": "memory", "aten::to": "memory", "aten::empty": "memory",
                "aten::empty_strided": "memory", "aten::resize_": "memory", "aten::narrow": "memory",
                "aten::add_": "elementwise", "aten::add": "elementwise", "aten::div": "elementwise",
                "aten::avg_pool2d": "elementwise", "aten::lerp": "elementwise", "aten::clamp": "elementwise",
                "aten::_scaled_dot_product_flash_attention_for_cpu": "matmul", "aten::bmm": "matmul",
                "aten::addmm": "matmul", "aten::linear": "matmul", "aten::result_type": "other",
                "Torch-Compiled Region: 0/0": "compile wrapper", "TorchDynamo Cache Lookup": "compile wrapper",
                "mkldnn::_convolution_pointwise": "convolution"}
    assert {name: classify(name) for name in expected} == expected


def test_classifier_names_the_kinds_an_inductor_kernel_fuses():
    # Names from a profile of litevae-tiny compiled by inductor (bf16 autocast, channels_last, kernel profiling on).
    real = {"graph_0_cpp_fused__to_copy_native_group_norm_silu_8": "fused norm+activation",
            "graph_0_cpp_fused__to_copy_add_native_group_norm_silu_29": "fused norm+activation+elementwise",
            "graph_0_cpp_fused__to_copy_add_cat_native_group_norm_silu_4": "fused norm+activation+elementwise+memory",
            "graph_0_cpp_fused__to_copy_native_group_norm_12": "fused norm",
            "graph_0_cpp_fused__to_copy__unsafe_view_add_clone_div_lerp_select_stack_sub_view_0":
                "fused elementwise+memory",
            "graph_0_cpp_fused__to_copy_avg_pool2d_cat_60": "fused elementwise+memory",
            "graph_0_cpp_fused__to_copy_add_55": "fused elementwise",
            "graph_0_cpp_fused__to_copy_58": "fused memory",
            "aten::mkldnn_convolution": "convolution", "aten::convolution": "convolution",
            "## Call CompiledFxGraph f2dmls3gnol4pkfiinh67zr7vpi3kllt6lgnrfig76hqhxd33sno ##": "compile wrapper",
            "Pregraph bytecode": "compile wrapper", "AOTDispatcher Runtime Wrapper Prologue": "compile wrapper"}
    assert {name: classify(name) for name in real} == real
    assert fused_ops("graph_0_cpp_fused__to_copy_add_native_group_norm_silu_29") == [
        "_to_copy", "add", "native_group_norm", "silu"]
    assert fused_ops("cpp_fused__to_copy_add_cat_12") == ["_to_copy", "add", "cat"]
    assert classify("cpp_fused_convolution_0") == "fused memory"  # the layout copy around an extern conv
    assert classify("cpp_fused_cat_1") == "fused memory"
    assert classify("cpp_fused_mystery_op_2") == "fused other"
    assert fused_ops("aten::cat") is None


def test_setting_filter_keeps_matching_settings():
    from compiled_encoders import PEER, setting_keys

    models = {"litevae-b": None, PEER: None}
    assert len(setting_keys(models, None)) == 24  # 2 models x {eager, compiled, compiled-inductor-gn} x 2 x 2
    assert setting_keys(models, ["compiled bf16 CL"]) == ["litevae-b|compiled|bf16|CL", f"{PEER}|compiled|bf16|CL"]
    assert setting_keys(models, ["compiled-inductor-gn bf16 CL"]) == [
        "litevae-b|compiled-inductor-gn|bf16|CL", f"{PEER}|compiled-inductor-gn|bf16|CL"]
    assert setting_keys(models, ["sd-vae|eager|fp32", "litevae compiled NCHW bf16"]) == [
        "litevae-b|compiled|bf16|NCHW", f"{PEER}|eager|fp32|NCHW", f"{PEER}|eager|fp32|CL"]


def test_gpu_bench_records_the_host_cpu():
    import gpu_bench

    info = gpu_bench.machine("cpu")
    assert {"cpu", "cpu_flags", "threads", "torch", "cpu_count"} <= set(info) and info["threads"] >= 1


def _run(args, timeout=300):
    run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    return run


@pytest.mark.slow
def test_compiled_sections_run_end_to_end_and_report(tmp_path):
    _run([SPEED / "run.py", "--smoke", "--sections", "compiled", "profile", "--threads", "1", "--out", tmp_path])
    enc = json.loads((tmp_path / "compiled-encoders.json").read_text())
    assert {"cpu", "cpu_flags", "threads", "torch"} <= set(enc["machine"])
    assert enc["auto"]["precision"] in ("fp32", "bf16") and enc["auto"]["reason"].startswith("auto:")
    (batch,) = enc["batches"]
    assert len(enc["settings"]) == 24 and sorted(r["setting"] for r in batch["rows"]) == sorted(enc["settings"])
    assert all(r["img_s"]["median"] > 0 for r in batch["rows"])
    assert all((r["compile_s"] is not None) == r["mode"].startswith("compiled") for r in batch["rows"])
    assert set(batch["best"]) == {"litevae-tiny", enc["peer"]}
    assert batch["ratio_vs_peer"]["ratio"]["median"] > 0 and batch["ratio_vs_peer"]["goal"]["target"] == 3.0
    coe = batch["compiled_over_eager"]["litevae-tiny|compiled"]
    assert coe["precision"] == enc["auto"]["precision"] and coe["goal"]["target"] == 1.5
    assert batch["compiled_over_eager"]["litevae-tiny|compiled-inductor-gn"]["goal"] is None
    assert enc["group_norm"]["kernels"] == "aten"  # CPU: compiled routes GroupNorm to ATen (runtime.compiled_models)

    prof = json.loads((tmp_path / "op-profile.json").read_text())
    assert [(r["model"], r["mode"]) for r in prof["rows"]] == [
        (m, mode) for m in ("litevae-tiny", enc["peer"]) for mode in ("eager", "compiled-inductor-gn", "compiled")]
    for r in prof["rows"]:
        assert set(r["kinds"]) <= KINDS | {k for k in r["kinds"] if k.startswith("fused ")}
        assert sum(k["ms"] for k in r["kinds"].values()) == pytest.approx(r["total_ms"], rel=1e-9)
        assert sum(k["pct"] for k in r["kinds"].values()) == pytest.approx(100.0)
        assert r["kinds"]["convolution"]["ms"] > 0 and r["kinds"]["norm"]["ms"] > 0
        assert 0 < len(r["top"]) <= 10 and r["top"][0]["ms"] >= r["top"][-1]["ms"]
    assert "compile wrapper" in prof["rows"][1]["kinds"] and "compile wrapper" not in prof["rows"][0]["kinds"]

    train = json.loads((tmp_path / "compiled-train.json").read_text())
    (row,) = train["rows"]
    assert row["phase"] == "B" and row["discriminator"] == "unet-disc-tiny"
    assert row["eager"]["img_s"]["median"] > 0 and row["compiled"]["img_s"]["median"] > 0
    assert row["compiled_over_eager"]["median"] > 0 and row["compiled"]["recompiles_while_timing"] == 0
    assert row["lpips"] == "off" and row["compiled"]["modules"] == ["LiteVAEEncoder", "VAEDecoder", "UNetDiscriminator"]
    assert row["compiled"]["graphs_after_warmup"] >= 3
    assert {"cpu", "cpu_flags", "threads", "torch"} <= set(train["machine"])

    md = (tmp_path / "results.md").read_text()
    fusion = json.loads((tmp_path / "fusion-bound.json").read_text())  # the profile section's second part
    assert fusion["model"] == "litevae-tiny" and len(fusion["rows"]) == 4 + (fusion["kernel_unavailable"] is None)
    for heading in ("## Compiled encoders", "## Op-kind profile of the encoders", "## Train step, eager vs compiled",
                    "## Fusion bound"):
        assert heading in md
    assert "| litevae-tiny | compiled | bf16 |" in md and "| model | mode | total ms | convolution | norm |" in md
    assert "/ SD-VAE best" in md and "compiled / eager at" in md
    if not batch["ratio_vs_peer"]["goal"]["met"]:  # tiny models at 32 px: missed, said with the profile's kinds
        assert "- Goal missed at batch 1: litevae-tiny / SD-VAE" in md and "the profile of litevae-tiny" in md


def _main(module: str, args: list, monkeypatch) -> None:
    """Run a section script's main() in this process (saves a torch + diffusers import per script)."""
    import importlib

    import torch._inductor.config as inductor_config

    monkeypatch.setattr(sys, "argv", [module, *map(str, args)])
    with inductor_config.patch({"cpp.enable_kernel_profile": False}):  # op_profile turns it on: restored after
        importlib.import_module(module).main()


@pytest.mark.slow
def test_prewarm_compiles_without_timing(tmp_path, monkeypatch):
    common = ["--quick", "--backend", "eager", "--threads", "1", "--warmup", "0"]
    _main("compiled_encoders", [*common, "--prewarm", "--batches", "1", "--settings", "sd-vae compiled fp32 NCHW",
                                "--json", tmp_path / "enc.json"], monkeypatch)
    enc = json.loads((tmp_path / "enc.json").read_text())
    assert enc["prewarm"] and list(enc["batches"][0]["compile_s"]) == [f"{enc['peer']}|compiled|fp32|NCHW"]
    assert "rows" not in enc["batches"][0]
    _main("op_profile", [*common, "--prewarm", "--models", "sd-vae", "--modes", "eager", "compiled", "--json",
                         tmp_path / "prof.json"], monkeypatch)
    (row,) = json.loads((tmp_path / "prof.json").read_text())["rows"]
    assert row["mode"] == "compiled" and row["model"].startswith("sd-vae") and "kinds" not in row
    _main("compiled_train", [*common, "--prewarm", "--phases", "A", "--lpips", "off", "--batch-a", "1",
                             "--json", tmp_path / "train.json"], monkeypatch)
    (row,) = json.loads((tmp_path / "train.json").read_text())["rows"]
    assert "eager" not in row and row["compiled"]["first_step_s"] > 0 and "img_s" not in row["compiled"]


def test_a_failing_compile_is_recorded_and_the_rest_still_runs(tmp_path, monkeypatch):
    common = ["--quick", "--backend", "no_such_backend", "--threads", "1", "--warmup", "0", "--reps", "1"]
    with pytest.raises(SystemExit) as stop:
        _main("compiled_encoders", [*common, "--batches", "1", "--settings", "sd-vae fp32 NCHW",
                                    "--json", tmp_path / "enc.json"], monkeypatch)
    assert stop.value.code == 3  # run.py's PARTIAL: it keeps the JSON and reports the errors
    enc = json.loads((tmp_path / "enc.json").read_text())
    assert list(enc["errors"]) == [f"{enc['peer']}|{mode}|fp32|NCHW|b1" for mode in ("compiled", "compiled-inductor-gn")]
    assert [r["setting"] for r in enc["batches"][0]["rows"]] == [f"{enc['peer']}|eager|fp32|NCHW"]
    with pytest.raises(SystemExit) as stop:
        _main("op_profile", [*common, "--models", "sd-vae", "--json", tmp_path / "prof.json"], monkeypatch)
    prof = json.loads((tmp_path / "prof.json").read_text())
    assert stop.value.code == 3 and [r["mode"] for r in prof["rows"]] == ["eager"] and len(prof["errors"]) == 2
    with pytest.raises(SystemExit) as stop:
        _main("compiled_train", [*common, "--phases", "A", "--lpips", "off", "--batch-a", "1",
                                 "--json", tmp_path / "train.json"], monkeypatch)
    train = json.loads((tmp_path / "train.json").read_text())
    assert stop.value.code == 3 and train["rows"] == [] and "no_such_backend" in train["errors"]["A"]

    from compiled_report import render_compiled

    md = "\n".join(render_compiled([enc | {"name": "compiled-encoders"}]))
    assert "Errors in compiled-encoders" in md and "|compiled|fp32|NCHW|b1" in md


def test_run_keeps_a_partial_section_and_says_so(tmp_path, monkeypatch):
    import run
    from report import render

    script = tmp_path / "partial.py"
    script.write_text("import json, sys\nout = sys.argv[sys.argv.index('--json') + 1]\n"
                      "doc = {'section': 'compiled_train', 'rows': [], 'errors': {'x|compiled': 'boom'}}\n"
                      "json.dump(doc, open(out, 'w'))\n"
                      "sys.exit(3)\n")
    monkeypatch.setattr(run, "HERE", tmp_path)
    doc = run.run_child("partial.py", [], 1, tmp_path, "compiled-train", 1)
    assert doc["partial"] and not doc.get("failed") and doc["errors"] == {"x|compiled": "boom"}
    md = render([doc], command="x", total_s=1.0, main_thp=1)
    assert "Sections with errors (the parts that ran are above): compiled-train" in md and "- `x|compiled`: boom" in md


def test_compile_check_section_runs_through_run_py(tmp_path):
    """`make bench BENCH_ARGS=--compiled` carries the full-size compile check (issue 22 item 1); --smoke runs it on
    litevae-tiny with the tracing-only backend."""
    _run([SPEED / "run.py", "--smoke", "--sections", "compile-check", "--threads", "1", "--out", tmp_path])
    doc = json.loads((tmp_path / "compile-check.json").read_text())
    assert doc["backend"] == "eager" and doc["recompiled"] == []
    assert [(r["model"], r["mode"], r["graphs"]) for r in doc["rows"]] == [("litevae-tiny", "eval", 1),
                                                                             ("litevae-tiny", "train", 1)]
    assert all(r["group_norm"]["kernels"] == "aten" and r["group_norm"]["routed"] > 0 for r in doc["rows"])
    md = (tmp_path / "results.md").read_text()
    assert "## Full-size compile check" in md and "| litevae-tiny | train | 1 | yes |" in md


def test_make_bench_passes_bench_args_to_run_py():
    """`make bench BENCH_ARGS=--compiled` is how the docs add the issue-22 sections: make must hand the flag on
    (a bare `make bench --compiled` is make's own unknown option)."""
    def run_line(*extra):
        dry = subprocess.run(["make", "-n", "--no-print-directory", "bench", *extra], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return [ln.strip() for ln in dry.splitlines() if "benchmarks/speed/run.py" in ln]

    assert run_line("BENCH_ARGS=--compiled --quick") == [".venv/bin/python benchmarks/speed/run.py --compiled --quick"]
    assert run_line() == [".venv/bin/python benchmarks/speed/run.py"]


def test_fusion_bound_probes_remove_what_they_say(tmp_path):
    """fusion_bound.py's probes: `no-groupnorm` holds no GroupNorm, `no-silu` runs no SiLU kernel, both change the
    output (the work really is gone), and the script writes a row per probe with a ratio to the peer."""
    import torch
    from fusion_bound import KERNEL, VARIANTS, silu_as_identity, without_group_norms

    from litevae_cli import create_model

    torch.manual_seed(0)
    lite = create_model("litevae-tiny", nz=4).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    stripped = without_group_norms(lite)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in lite.modules())
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in stripped.modules())

    def ops(fn):
        with torch.profiler.profile() as prof, torch.no_grad():
            out = fn()
        return out, {e.key for e in prof.key_averages()}
    stock, stock_ops = ops(lambda: lite(x).moments)
    with silu_as_identity():
        no_silu, no_silu_ops = ops(lambda: lite(x).moments)
    assert any("silu" in k for k in stock_ops) and not any("silu" in k for k in no_silu_ops)
    assert not torch.equal(stock, no_silu) and not torch.equal(stock, stripped(x).moments)
    assert torch.equal(lite(x).moments, stock)  # the patch is undone on exit

    _run([SPEED / "fusion_bound.py", "--quick", "--batch", "1", "--reps", "1", "--warmup", "0", "--threads", "1",
          "--json", tmp_path / "fb.json"])
    doc = json.loads((tmp_path / "fb.json").read_text())
    kernel_row = [KERNEL] if doc["kernel_unavailable"] is None else []  # the real kernel, where it builds
    assert [r["variant"] for r in doc["rows"]] == [*VARIANTS, *kernel_row]
    assert all(r["ratio_vs_peer"]["median"] > 0 for r in doc["rows"]) and "| neither |" in doc["table"]
    if kernel_row:
        assert doc["accuracy"]["calls_per_forward"]["fused"] > 0 and "from an fp32 forward" in doc["table"]
        assert doc["peer_accuracy"]["calls_per_forward"]["fused"] > 0 and doc["both_fused"]["median"] > 0
        assert "With the kernel in both models" in doc["table"]
    else:
        assert f"{KERNEL} not measured: {doc['kernel_unavailable']}" in doc["table"]
