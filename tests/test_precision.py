"""`precision: auto` (the default of train.precision): bf16 autocast on CUDA with bf16 and on CPUs with
native bf16 (AMX or AVX512-BF16 flags), fp32 elsewhere, decided on mocked hardware; the run record
(config.yaml's `run:` and the checkpoint's) says what ran and why."""

import pytest
import torch
import yaml
from conftest import image_folder, merged_preset, write_preset

from litevae_cli import runtime
from litevae_cli.config import config_from_dict
from litevae_cli.config.schema import TrainCfg
from litevae_cli.errors import UserError
from litevae_cli.files.checkpoint import load_checkpoint
from litevae_cli.training.loop import train

CPU = torch.device("cpu")


@pytest.fixture
def cpu_with(monkeypatch):
    """cpu_with(flags, capability): /proc/cpuinfo flags and torch's CPU capability, mocked."""

    def mock(flags: set, capability: str = "AVX2"):
        monkeypatch.setattr(runtime, "cpu_flags", lambda: set(flags))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)

    return mock


@pytest.mark.parametrize(("flags", "capability", "chosen", "named"), [
    ({"avx2", "avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}, "AVX512", "bf16", "amx_bf16, avx512_bf16"),
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", "bf16", "avx512_bf16"),  # e.g. AMD Zen 4
    (set(), "AMX", "bf16", "capability AMX"),  # no /proc/cpuinfo: torch's capability decides
    ({"avx2", "avx512f"}, "AVX512", "fp32", "without native bf16"),
    ({"avx2"}, "AVX2", "fp32", "without native bf16"),
])
def test_auto_on_cpu_follows_the_bf16_units(cpu_with, flags, capability, chosen, named):
    cpu_with(flags, capability)
    precision, reason = runtime.resolve_precision("auto", CPU)
    assert precision == chosen and reason.startswith("auto: ") and named in reason


@pytest.mark.parametrize(("bf16", "chosen"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it(monkeypatch, cpu_with, bf16, chosen):
    cpu_with(set())  # the host CPU does not matter on a GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Mock GPU")
    precision, reason = runtime.resolve_precision("auto", torch.device("cuda", 0))
    assert precision == chosen and "CUDA" in reason and "Mock GPU" in reason


def test_auto_on_mps_and_explicit_precisions(cpu_with):
    cpu_with({"amx_bf16"})
    assert runtime.resolve_precision("auto", torch.device("mps"))[0] == "fp32"
    for asked in ("fp32", "bf16"):  # an explicit choice is kept, whatever the hardware
        assert runtime.resolve_precision(asked, CPU) == (asked, "asked for")


def test_setup_runtime_resolves_auto_and_rejects_unknown(cpu_with):
    cpu_with({"avx2"})
    rt = runtime.setup_runtime("cpu", "auto", init_distributed=False)
    assert rt.precision == "fp32" and rt.autocast().__class__.__name__ == "nullcontext"
    assert rt.precision_record() == {"precision": "fp32", "precision_reason": rt.precision_reason}
    cpu_with({"avx512_bf16"})
    rt = runtime.setup_runtime("cpu", "auto", init_distributed=False)
    assert rt.precision == "bf16" and rt.dtype == torch.bfloat16
    with pytest.raises(UserError, match="auto, fp32, bf16, fp16"):
        runtime.setup_runtime("cpu", "fp8", init_distributed=False)


def test_auto_is_the_schema_default_and_a_valid_config_value():
    assert TrainCfg(steps=1).precision == "auto"
    data = merged_preset({"train": {"precision": None}})
    del data["train"]["precision"]
    assert config_from_dict(data).train.precision == "auto"
    with pytest.raises(UserError, match="train.precision"):
        config_from_dict(merged_preset({"train": {"precision": "automatic"}}))


def test_a_tiny_auto_run_records_its_choice(tmp_path, cpu_with, capsys):
    cpu_with({"avx2"})  # fp32: the tiny run stays as fast and exact as the other tests' runs
    preset = write_preset(tmp_path / "tiny.yaml", {"train": {"steps": 1, "precision": "auto"}})
    assert train("pretrain", preset, image_folder(tmp_path / "img", n=2), tmp_path / "run", device="cpu") == 0
    assert "cpu fp32 (auto: CPU without native bf16" in capsys.readouterr().out
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["train"]["precision"] == "auto"  # the recipe keeps auto; the record says what ran
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    for record in (config["run"], ckpt["run"]):
        assert record["precision"] == "fp32" and "without native bf16" in record["precision_reason"]
