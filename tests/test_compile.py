"""torch.compile on every tiny registered model and the tiny autoencoder: one full graph (fullgraph=True:
a graph break is an error), the same outputs and gradients as eager, and no recompile when the batch
size or the resolution changes (dims marked by `models.compiling.mark_dynamic`); unmarked, at most one
recompile per kind of dim. Dynamo's "eager" backend (tracing only; CPU inductor compiles take minutes):
the inductor check of the full-size models is benchmarks/speed/compile_check.py."""

import copy

import pytest
import torch

from litevae_cli.models import build_autoencoder, create_model, get_entry, list_models
from litevae_cli.models.compiling import mark_dynamic

TINY = [name for name in list_models() if get_entry(name).test_variant]
# Sides per model: valid for it and never a 1-pixel map inside (a size-1 dim is specialised by torch).
SIDES = {"unet-disc-tiny": (128, 192)}  # U-Net discriminator: multiples of 64, its 6th level must be > 1 px


class GraphCounter:
    """A dynamo backend that runs each captured graph as is and counts the compiles."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def _input(model, name: str, n: int, side: int) -> torch.Tensor:
    if get_entry(name).kind == "decoder":
        return torch.randn(n, model.nz, side // 8, side // 8)
    return torch.rand(n, 3, side, side) * 2 - 1


def _tensors(out) -> list[torch.Tensor]:
    """Every output tensor: a tensor, a tuple of them, or a posterior (its moments)."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out if item is not None for t in _tensors(item)]
    return [out.moments]


def _check_same(eager_model, compiled, twin, x, train: bool, **kwargs):
    with torch.set_grad_enabled(train):
        torch.manual_seed(1)
        expected = _tensors(eager_model(x, **kwargs))
        torch.manual_seed(1)
        got = _tensors(compiled(x, **kwargs))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if train:
        sum(t.float().square().mean() for t in expected).backward()
        sum(t.float().square().mean() for t in got).backward()
        pairs = [(p, q) for p, q in zip(eager_model.parameters(), twin.parameters()) if p.requires_grad]
        assert pairs and all(p.grad is not None for p, _ in pairs)
        for p, q in pairs:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5)
            p.grad, q.grad = None, None


# litevae-tiny and smc-decoder-tiny train (forward and backward) inside the tiny autoencoder below.
CASES = [(name, mode) for name in TINY for mode in ("eval", "train")
         if (name, mode) not in {("litevae-tiny", "train"), ("smc-decoder-tiny", "train")}]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_tiny_model_compiles_to_one_graph_equal_to_eager(name, mode):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = getattr(create_model(name), mode)()
    twin = copy.deepcopy(model)  # spectral norm and BatchNorm update buffers in train mode: one copy each
    counter = GraphCounter()
    compiled = torch.compile(twin, fullgraph=True, backend=counter)
    side, other_side = SIDES.get(name, (32, 48))
    for n, s in ((2, side), (3, side), (3, other_side)):  # batch changes, then the resolution
        _check_same(model, compiled, twin, mark_dynamic(_input(model, name, n, s)), train=mode == "train")
    assert counter.graphs == 1


def test_tiny_autoencoder_trains_compiled_as_one_graph():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4).train()
    twin = copy.deepcopy(model)
    counter = GraphCounter()
    compiled = torch.compile(twin, fullgraph=True, backend=counter)
    for n, s in ((2, 32), (3, 48)):  # the posterior sample (global RNG) is traced too
        _check_same(model, compiled, twin, mark_dynamic(torch.rand(n, 3, s, s) * 2 - 1), train=True)
    assert counter.graphs == 1


def test_unmarked_litevae_recompiles_once_per_kind_of_dim():
    """The bug this guards: ResBlocks of several widths resumed after graph breaks as one shared frame,
    recompiled for every width until torch's recompile limit ("size mismatch at index 1")."""
    torch._dynamo.reset()
    model = create_model("litevae-tiny").eval()
    counter = GraphCounter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    graphs = []
    for n, s in ((2, 32), (3, 32), (4, 32), (4, 48), (4, 64), (2, 64)):
        with torch.no_grad():
            compiled(torch.rand(n, 3, s, s))
        graphs.append(counter.graphs)
    assert graphs == [1, 2, 2, 3, 3, 3]  # one recompile for the batch, one for the sides, then none


def test_mark_dynamic_rejects_a_non_image_tensor():
    with pytest.raises(ValueError, match="N, C, H, W"):
        mark_dynamic(torch.zeros(2, 3))
