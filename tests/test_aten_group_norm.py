"""GroupNorm kept as ATen's kernel under torch.compile (runtime.aten_group_norm, runtime.compiled_models): the op
passes torch's custom-op checks (fake tensors, autograd, layouts), a routed model gives eager nn.GroupNorm's values
bit for bit (forward and gradients), keeps its state_dict, compiles to one graph under aot_eager and inductor with
the op left opaque, and `compile_models` routes on CPU only unless told otherwise."""

import copy

import pytest
import torch
from torch import nn

from litevae_cli.errors import UserError
from litevae_cli.models import build_autoencoder, create_model
from litevae_cli.models.compiling import mark_dynamic
from litevae_cli.runtime.aten_group_norm import AtenGroupNorm, group_norm, route_group_norm
from litevae_cli.runtime.compiled_models import GROUP_NORM_ENV, compile_models, group_norm_choice

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _transposed(dtype):
    """[N, C, L] as the transpose of a contiguous [N, L, C]: what diffusers' attention block normalises."""
    return torch.randn(2, 30, 32, dtype=dtype).transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["NCHW", "CL", "transposed NCL"])
def test_the_op_passes_torch_opcheck(dtype, layout):
    x = _transposed(dtype) if layout == "transposed NCL" else torch.randn(2, 32, 6, 5, dtype=dtype).to(
        memory_format=torch.channels_last if layout == "CL" else torch.contiguous_format)
    w, b = torch.randn(32, requires_grad=True), torch.randn(32, requires_grad=True)  # fp32 params, as in autocast
    torch.library.opcheck(group_norm, (x.requires_grad_(), w, b, 8, 1e-6))


def _loss_and_grads(model, x):
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(1)  # the posterior sample
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = sum(t.float().square().mean() for t in (out[0], out[1].moments))
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


def _autoencoder():
    torch.manual_seed(0)
    return build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4).train()


def test_a_routed_model_equals_eager_bit_for_bit_and_keeps_its_keys():
    model = _autoencoder()
    routed = copy.deepcopy(model)
    n_norms = sum(type(m) is nn.GroupNorm for m in model.modules())
    assert route_group_norm(routed, None) == n_norms > 0
    assert not any(type(m) is nn.GroupNorm for m in routed.modules())
    assert isinstance(copy.deepcopy(routed).encoder, nn.Module)
    assert all(type(m) is AtenGroupNorm for m in copy.deepcopy(routed).modules() if isinstance(m, nn.GroupNorm))
    assert list(routed.state_dict()) == list(model.state_dict())
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).to(memory_format=torch.channels_last)
    (la, ga), (lb, gb) = _loss_and_grads(model, x), _loss_and_grads(routed, x)
    assert torch.equal(la, lb)
    assert all(torch.equal(a, b) for a, b in zip(ga, gb))


def test_only_affine_plain_group_norms_are_routed():
    class MyNorm(nn.GroupNorm):
        pass

    net = nn.Sequential(nn.GroupNorm(2, 4), nn.GroupNorm(2, 4, affine=False), MyNorm(2, 4))
    assert route_group_norm(net) == 1
    assert [type(m) for m in net] == [AtenGroupNorm, nn.GroupNorm, MyNorm]


def test_a_routed_autoencoder_trains_as_one_aot_graph_equal_to_eager():
    """aot_eager runs the op's fake and its autograd formula through AOTAutograd, with ATen's kernels."""
    torch._dynamo.reset()
    model = _autoencoder()
    twin = copy.deepcopy(model)
    route_group_norm(twin)
    graphs = []

    def counting_aot_eager(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    compiled = torch.compile(twin, fullgraph=True, backend=counting_aot_eager)
    for n, s in ((2, 32), (3, 48)):
        x = mark_dynamic((torch.rand(n, 3, s, s) * 2 - 1).to(memory_format=torch.channels_last))
        (la, ga), (lb, gb) = _loss_and_grads(model, x), _loss_and_grads(compiled, x)
        assert torch.equal(la, lb)
        assert all(torch.equal(a, b) for a, b in zip(ga, gb))
    assert len(graphs) == 1
    assert any(node.target is torch.ops.litevae.group_norm.default for node in graphs[0].graph.nodes)


@pytest.mark.parametrize("train", [False, True])
def test_inductor_keeps_the_op_opaque_and_matches_eager(train):
    """The inductor path the CPU speed-up rests on: the op's fake layout passes inductor's stride checks
    (a plain fallback for native_group_norm does not), and the generated code calls the op, not a fused norm."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(), nn.Conv2d(16, 8, 1))
    block = block.to(memory_format=torch.channels_last).train(train)
    twin = copy.deepcopy(block)
    route_group_norm(twin)
    x = torch.randn(2, 8, 12, 12).to(memory_format=torch.channels_last)

    def run(model):
        with torch.set_grad_enabled(train), torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        if train:
            y.float().square().mean().backward()
        return y

    compiled = torch.compile(twin, fullgraph=True, backend="inductor")
    got, code = run_and_get_code(run, compiled)
    torch.testing.assert_close(got, run(block), rtol=2e-2, atol=2e-2)  # bf16: inductor fuses the SiLU differently
    assert "litevae.group_norm" in code[0]
    if train:
        assert "litevae.group_norm_backward" in code[-1]
        for p, q in zip(block.parameters(), twin.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=5e-2, atol=5e-2)


class AttentionNorm(nn.Module):
    """diffusers' attention-block pattern: GroupNorm of a transposed [N, C, L] view between two linears."""

    def __init__(self):
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(16, 16), nn.GroupNorm(4, 16), nn.Linear(16, 16)

    def forward(self, x):
        h = self.inp(x.flatten(2).transpose(1, 2))  # [N, L, C]
        return self.out(self.norm(h.transpose(1, 2)).transpose(1, 2))


def test_inductor_handles_a_transposed_input():
    """The op's outputs are contiguous for a non-channels_last input (as ATen's are), so inductor's stride
    checks hold for the transposed view diffusers' attention normalises (SD-VAE's mid block)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = AttentionNorm().eval()
    twin = copy.deepcopy(model)
    assert route_group_norm(twin) == 1
    x = torch.randn(2, 16, 6, 6).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.compile(twin, fullgraph=True, backend="inductor")(x)
        want = model(x)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_group_norm_choice_by_device_and_override(monkeypatch):
    monkeypatch.delenv(GROUP_NORM_ENV, raising=False)
    assert group_norm_choice(torch.device("cpu"))[0] == "aten"
    assert group_norm_choice(torch.device("cuda"))[0] == "inductor"
    monkeypatch.setenv(GROUP_NORM_ENV, "inductor")
    assert group_norm_choice(torch.device("cpu")) == ("inductor", f"{GROUP_NORM_ENV}=inductor")
    monkeypatch.setenv(GROUP_NORM_ENV, "aten")
    assert group_norm_choice(torch.device("cpu"))[0] == "aten"
    with pytest.raises(UserError, match="CPU runs only"):
        group_norm_choice(torch.device("cuda"))
    monkeypatch.setenv(GROUP_NORM_ENV, "fused")
    with pytest.raises(UserError, match=GROUP_NORM_ENV):
        group_norm_choice(torch.device("cpu"))


def test_compile_models_routes_on_cpu_and_records_it(monkeypatch):
    monkeypatch.delenv(GROUP_NORM_ENV, raising=False)
    torch._dynamo.reset()
    encoder, disc = create_model("litevae-tiny"), None
    record = compile_models(torch.device("cpu"), encoder, disc, backend="eager")
    assert record["backend"] == "eager" and record["modules"] == [type(encoder).__name__]
    assert record["group_norm"]["kernels"] == "aten" and record["group_norm"]["routed"] > 0
    assert not any(type(m) is nn.GroupNorm for m in encoder.modules())
    monkeypatch.setenv(GROUP_NORM_ENV, "inductor")
    other = create_model("litevae-tiny")
    assert compile_models(torch.device("cpu"), other, backend="eager")["group_norm"]["routed"] == 0
    assert any(type(m) is nn.GroupNorm for m in other.modules())
