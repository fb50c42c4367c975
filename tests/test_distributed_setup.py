"""Process-group set-up without a GPU: device choice under a mocked CUDA env, the NCCL init arguments,
abort on error paths, the 1-rank process group (gloo), batch semantics and the peer-loss line."""

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from conftest import image_folder, write_preset

from litevae_cli import runtime
from litevae_cli.config import resolve_config
from litevae_cli.errors import Stopped, UserError
from litevae_cli.jobs.stopping import peers_guard
from litevae_cli.training.batching import batch_plan, lr_note

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "CUDA_VISIBLE_DEVICES", runtime.TIMEOUT_ENV, runtime.FORCE_ENV)


@pytest.fixture
def cuda(monkeypatch):
    """A machine that says it has CUDA with `cuda.count` visible devices (default 8); torchrun env cleared."""
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)

    class Fake:
        count = 8

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: Fake.count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: None)
    return Fake


def test_each_rank_takes_its_local_rank_gpu_or_the_only_one_it_sees(cuda):
    assert runtime.select_device(None, local_rank=3, local_world_size=8) == torch.device("cuda", 3)
    assert runtime.select_device("cuda", local_rank=5, local_world_size=8) == torch.device("cuda", 5)
    cuda.count = 1  # CUDA_VISIBLE_DEVICES=<one GPU> per rank (SLURM --gpus-per-task, torchrun --virtual-local-rank)
    assert runtime.select_device(None, local_rank=3, local_world_size=8) == torch.device("cuda", 0)
    cuda.count = 2
    with pytest.raises(UserError, match=r"LOCAL_RANK=3 but this process sees 2 CUDA devices"):
        runtime.select_device("cuda", local_rank=3, local_world_size=4)


def test_device_cuda_n_under_torchrun_is_refused_in_one_line(cuda, monkeypatch):
    with pytest.raises(UserError) as err:
        runtime.select_device("cuda:0", local_rank=1, local_world_size=8)
    assert "--device cuda:0 under torchrun would put all 8 ranks" in str(err.value)
    assert "\n" not in str(err.value)
    assert runtime.select_device("cuda:1", local_rank=0, local_world_size=1) == torch.device("cuda", 1)
    for key, value in {"WORLD_SIZE": "8", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8"}.items():
        monkeypatch.setenv(key, value)  # as torchrun sets them: the command line's --device meets the same check
    with pytest.raises(UserError, match="under torchrun would put all 8 ranks of this node on GPU 0"):
        runtime.setup_runtime("cuda:0", "fp32", init_distributed=False)
    with pytest.raises(UserError, match="sees 8 CUDA device"):
        runtime.select_device("cuda:9")
    with pytest.raises(UserError, match="cpu, cuda"):
        runtime.select_device("cuda:x")


def test_nccl_group_gets_timeout_and_device_id(cuda, monkeypatch):
    calls, stores = [], []
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(dist, "TCPStore", lambda *a, **kw: stores.append((a, kw)) or dist.HashStore())
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(dist, "get_rank", lambda *a: 3)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 8)
    env = {"WORLD_SIZE": "8", "RANK": "3", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "10.0.0.1",
           "MASTER_PORT": "29500"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rt = runtime.setup_runtime(None, "fp32")
    store = calls[0].pop("store")
    assert calls == [{"backend": "nccl", "rank": 3, "world_size": 8, "timeout": timedelta(seconds=600),
                      "device_id": torch.device("cuda", 3)}]
    # torchrun's agent store, as a client, keys under this restart attempt's prefix (stale keys hung a restart)
    assert stores == [(("10.0.0.1", 29500, 8), {"is_master": False, "timeout": timedelta(seconds=600)})]
    store.set("k", "v")
    assert isinstance(store, dist.PrefixStore) and store.underlying_store.get("litevae/attempt-2/k") == b"v"
    assert (rt.device, rt.rank, rt.world_size, rt.backend, rt.dist_timeout_s) == (torch.device("cuda", 3), 3, 8,
                                                                                  "nccl", 600.0)
    assert rt.dist_record() == {"world_size": 8, "backend": "nccl", "dist_timeout_s": 600.0}
    monkeypatch.setenv(runtime.TIMEOUT_ENV, "42")  # the env for commands without a config
    assert runtime.setup_runtime(None, "fp32").dist_timeout_s == 42.0
    assert calls[-1]["timeout"] == timedelta(seconds=42)
    assert runtime.setup_runtime(None, "fp32", dist_timeout_s=7).dist_timeout_s == 7.0  # the config wins
    monkeypatch.setenv(runtime.TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match="LITEVAE_DIST_TIMEOUT_S='soon'"):
        runtime.setup_runtime(None, "fp32")


def test_error_path_aborts_the_group_and_a_normal_end_destroys_it(monkeypatch):
    events = []
    monkeypatch.setattr(runtime, "setup_runtime", lambda *a, **k: runtime.Runtime(torch.device("cpu"), "fp32", 0, 2,
                                                                                   backend="nccl"))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: events.append("destroy"))
    monkeypatch.setattr(dist.distributed_c10d, "_abort_process_group", lambda *a: events.append("abort"))
    with pytest.raises(RuntimeError):
        with runtime.open("cpu"):
            raise RuntimeError("Connection reset by peer")
    assert events == ["abort"]
    with runtime.open("cpu"):
        pass
    assert events == ["abort", "destroy"]


def test_force_distributed_joins_a_one_rank_gloo_group(monkeypatch):
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    with runtime.open("cpu", "fp32", force_distributed=True, dist_timeout_s=30) as rt:
        assert dist.is_initialized() and rt.distributed and rt.world_size == 1 and rt.backend == "gloo"
        assert type(rt.wrap(torch.nn.Linear(2, 2))).__name__ == "DistributedDataParallel"
        assert runtime.all_reduce_sum(rt, torch.ones(2)).tolist() == [1.0, 1.0]
    assert not dist.is_initialized()
    monkeypatch.setenv(runtime.FORCE_ENV, "1")
    with runtime.open("cpu", "fp32") as rt:
        assert rt.backend == "gloo"
    assert not dist.is_initialized()


def test_a_force_distributed_run_trains_in_ddp(tmp_path, monkeypatch):
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    from litevae_cli.files.checkpoint import load_checkpoint
    from litevae_cli.training.loop import train

    wrapped = []
    plain_wrap = runtime.Runtime.wrap
    monkeypatch.setattr(runtime.Runtime, "wrap", lambda self, m: wrapped.append(plain_wrap(self, m)) or wrapped[-1])
    preset = write_preset(tmp_path / "tiny.yaml", {"train": {"steps": 2}, "runtime": {"force_distributed": True}})
    out = tmp_path / "run"
    code = train("pretrain", preset, image_folder(tmp_path / "images"), out, device="cpu")
    assert code == 0 and not dist.is_initialized()
    assert wrapped and all(type(m).__name__ == "DistributedDataParallel" for m in wrapped)
    run = load_checkpoint(out / "checkpoints" / "last.pt")["run"]
    assert run["distributed"] == {"world_size": 1, "backend": "gloo", "dist_timeout_s": 600.0}
    assert run["batch"] == {"global": 2, "per_gpu": 2, "grad_accum": 1, "world_size": 1, "set_by": "train.batch_size"}


def test_batch_size_is_global_and_batch_per_gpu_overrides_it(tmp_path, capsys):
    preset = write_preset(tmp_path / "tiny.yaml", {"train": {"batch_size": 16, "grad_accum": 2}})
    cfg = resolve_config(preset)
    assert batch_plan(cfg, 8).record() == {"global": 16, "per_gpu": 1, "grad_accum": 2, "world_size": 8,
                                           "set_by": "train.batch_size"}
    with pytest.raises(UserError, match="must be divisible by world size x grad_accum = 3 x 2"):
        batch_plan(cfg, 3)
    assert lr_note(cfg, batch_plan(cfg, 8)) is None
    per_gpu = resolve_config(preset, ["train.batch_per_gpu=4"])
    plan = batch_plan(per_gpu, 8)
    assert (plan.global_batch, plan.per_gpu) == (64, 4)
    assert plan.describe() == "batch 64 global = 4 per rank x 2 accum x 8 ranks (train.batch_per_gpu)"
    assert "4x train.batch_size=16" in lr_note(per_gpu, plan) and "would give 0.0004" in lr_note(per_gpu, plan)
    with pytest.raises(UserError, match="train.batch_size .in --batch-size. and train.batch_per_gpu=4"):
        resolve_config(preset, ["train.batch_per_gpu=4"], {"--batch-size": 32})
    with pytest.raises(UserError, match="train.batch_per_gpu' must be >= 1"):
        resolve_config(preset, ["train.batch_per_gpu=0"])


def test_a_lost_peer_is_one_line_with_the_last_checkpoint_step(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 2}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(Stopped) as stop:
        with peers_guard(0, 2, tmp_path):
            raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4242\nmore")
    assert str(stop.value).startswith("rank 0: peer rank 1 is gone; last checkpoint step 2;")
    assert "\n" not in str(stop.value) and stop.value.code == 1
    assert str(stop.value).endswith("to resume (Connection closed by peer [127.0.0.1]:4242)")
    with pytest.raises(Stopped, match="rank 3: a peer rank is gone; no checkpoint yet"):
        with peers_guard(3, 4, tmp_path / "empty"):
            raise dist.DistBackendError("NCCL error: remote process exited")
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not a peer problem: the traceback stays
        with peers_guard(0, 2, tmp_path):
            raise RuntimeError("shape mismatch")


def test_after_a_peer_loss_sigterm_cannot_cut_the_line(monkeypatch):
    import signal

    from litevae_cli.jobs.stopping import StopSignal

    monkeypatch.setattr(runtime, "process_rank", lambda: (0, 2))
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RuntimeError):
            with StopSignal():
                raise RuntimeError("shape mismatch")  # not a peer: the handler before is back
        assert signal.getsignal(signal.SIGTERM) == before
        with pytest.raises(RuntimeError):
            with StopSignal():
                raise RuntimeError("[pair.cc:534] Connection reset by peer")
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # torchrun's SIGTERM comes while the line is written
    finally:
        signal.signal(signal.SIGTERM, before)
