"""The package's shape (issue 15): thin subcommand modules, the runtime set up only in runtime/, the
registry filled by `models/__init__.py` with no import cycle, one model spec type that imports no torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "litevae_cli"
COMMAND_MODULES = sorted((PACKAGE / "cli").glob("*_cmd.py"))
# What only the runtime package (runtime/) may name: process groups, DDP, autocast, device selection, set-up.
RUNTIME_ONLY = {"init_process_group", "destroy_process_group", "DistributedDataParallel", "set_device",
                "autocast", "setup_runtime", "teardown_runtime", "select_device"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _module_level_imports(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def _is_rt_device(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "device" and isinstance(node.value, ast.Name) \
        and node.value.id == "rt"


def test_every_subcommand_module_is_found():
    assert {p.stem for p in COMMAND_MODULES} >= {"train_cmd", "eval_cmd", "encode_cmd", "reconstruct_cmd",
                                                  "inspect_cmd", "export_cmd", "models_cmd"}


@pytest.mark.parametrize("path", COMMAND_MODULES, ids=lambda p: p.stem)
def test_subcommand_module_is_thin(path):
    tree = _tree(path)
    # No torch at import time, and nothing from the package but the CLI's own shared module.
    for name in _module_level_imports(tree):
        assert not name.startswith("torch"), f"{path.name} imports {name} at module level"
        assert not name.startswith("litevae_cli") or name == "litevae_cli.cli.common", (path.name, name)
    # No runtime set-up, no torch calls, no device placement: one `with runtime.open(...)` at most.
    opens = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in RUNTIME_ONLY, f"{path.name} names {node.attr}"
            if isinstance(node.value, ast.Name):
                assert node.value.id != "torch", f"{path.name} calls torch.{node.attr}"
                opens += (node.value.id, node.attr) == ("runtime", "open")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{path.name} imports torch"
            assert not set(names) & RUNTIME_ONLY, f"{path.name} imports {set(names) & RUNTIME_ONLY}"
        assert not _is_rt_device(node), f"{path.name} places something on rt.device itself"
    assert opens <= 1, f"{path.name} opens the runtime {opens} times"


def test_importing_the_cli_loads_no_torch():
    code = "import sys, litevae_cli.cli; sys.exit(int(any(m == 'torch' or m.startswith('torch.') for m in sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


RUNTIME = PACKAGE / "runtime"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if RUNTIME not in p.parents),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_runtime_sets_up_the_runtime(path):
    """Process groups, DDP wrapping, autocast and device placement on rt.device live in runtime/."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute):
            assert node.attr not in RUNTIME_ONLY or node.attr == "autocast" and _is_rt(node.value), \
                f"{path.name}:{node.lineno} uses {node.attr}"
            assert not (node.attr == "distributed" and isinstance(node.value, ast.Name) and node.value.id == "torch"), \
                f"{path.name}:{node.lineno} uses torch.distributed"
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("torch.distributed"), f"{path.name} imports torch.distributed"
            assert not {a.name for a in node.names} & RUNTIME_ONLY, f"{path.name}:{node.lineno} imports set-up"
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("torch.distributed") for a in node.names), path.name
        if isinstance(node, ast.Call):  # x.to(rt.device) or device=rt.device: ask rt.place / rt.batch
            moved = isinstance(node.func, ast.Attribute) and node.func.attr == "to" and any(map(_is_rt_device, node.args))
            assert not moved and not any(k.arg == "device" and _is_rt_device(k.value) for k in node.keywords), \
                f"{path.name}:{node.lineno} places a tensor or module on rt.device itself"


def _is_rt(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "rt"


def test_the_registry_imports_no_model_family_and_the_package_fills_it():
    tree = _tree(PACKAGE / "models" / "registry.py")
    imported = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all("litevae_cli" not in (getattr(n, "module", None) or "") for n in imported)
    assert all(not a.name.startswith("litevae_cli") for n in imported if isinstance(n, ast.Import) for a in n.names)
    code = ("from litevae_cli.models.registry import list_models; "
            "import sys; sys.exit(0 if {'litevae-b', 'smc-decoder', 'unet-disc-s'} <= set(list_models()) else 1)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_one_model_spec_type_without_torch():
    code = ("import sys; from litevae_cli.config import Config; from litevae_cli.model_spec import ModelSpec; "
            "assert Config.__dataclass_fields__['model'].type in ('Optional[ModelSpec]', ModelSpec); "
            "print(ModelSpec('litevae-b', 'smc-decoder', 12, {}, {'channels': 64}).describe()); "
            "sys.exit(int('torch' in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "litevae-b + smc-decoder (nz=12, decoder_kwargs={'channels': 64})"
    from litevae_cli.models import build_autoencoder
    from litevae_cli.model_spec import ModelSpec

    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    assert isinstance(ae.spec, ModelSpec) and ae.spec.describe() == "litevae-tiny + smc-decoder-tiny (nz=4)"


def test_a_checkpoint_stores_the_model_spec_once_and_old_version_2_files_still_load(tmp_path):
    import torch

    from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, stored_config
    from litevae_cli.files.model_file import load_autoencoder
    from litevae_cli.config import config_to_dict, load_config
    from litevae_cli.models import create_autoencoder
    from litevae_cli.runtime import setup_runtime
    from litevae_cli.training.state import build_train_state, make_checkpoint

    cfg = load_config("demo", ["model.encoder=litevae-tiny", "model.decoder=smc-decoder-tiny", "model.nz=4",
                               "model.encoder_kwargs={}", "model.decoder_kwargs={}"])
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    ckpt = make_checkpoint(rt, cfg, build_train_state(rt, cfg), [])
    assert "model" not in ckpt["config"] and ckpt["model_spec"] == cfg.model.to_dict()
    assert stored_config(ckpt) == config_to_dict(cfg)
    # A version-2 file as litevae 0.2.0 wrote it (the spec in model_spec AND in config.model) loads the same.
    old = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": cfg.model.to_dict(),
           "model": create_autoencoder(cfg.model).state_dict(), "ema": None, "step": 3,
           "config": config_to_dict(cfg)}
    torch.save(old, tmp_path / "old.pt")
    loaded = load_autoencoder(tmp_path / "old.pt")
    assert loaded.spec == cfg.model and loaded.config == config_to_dict(cfg) and loaded.step == 3


# ----------------------------------------------------------------------------- issue 20: no circles
def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at any depth of its body (function-level imports too).
    `from a.b import c` counts as a.b.c when that is a module, else a.b; a module's own ancestors
    (packages already being imported) are left out."""
    mods = _modules()

    def targets(cur: str, node) -> set[str]:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = cur.split(".") if mods[cur].name == "__init__.py" else cur.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        out = set()
        for n in names:
            while n and n not in mods:
                n = n.rpartition(".")[0]
            if n and n != cur and not cur.startswith(n + "."):
                out.add(n)
        return out

    return {m: set().union(*[targets(m, n) for n in ast.walk(_tree(p)) if isinstance(n, (ast.Import, ast.ImportFrom))])
            for m, p in mods.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan): each holds a cycle of any length."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles_of_any_length():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    """Function-level imports count: a lazy import hides a cycle, it does not cure it."""
    assert import_cycles(import_graph()) == []


def test_the_package_root_holds_only_cross_cutting_modules():
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    # diffusers_vae: the public diffusers model, whose import path saved pipelines record (model_index.json)
    assert root == ["__init__", "__main__", "diffusers_vae", "errors", "model_spec"], root
    # config/ (schema, checks, presets) and runtime/ (device, precision, process group, memory format) are the
    # cross-cutting packages beside them
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert {"config", "runtime"} <= set(packages), packages
    assert not (PACKAGE / "config.py").exists() and not (PACKAGE / "runtime.py").exists()


def test_the_wheel_lists_every_sub_package():
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    for init in PACKAGE.rglob("__init__.py"):
        name = ".".join(init.parent.relative_to(PACKAGE.parent).parts)
        assert f'"{name}"' in text, f"pyproject.toml [tool.setuptools] packages lacks {name}"


def _command_functions():
    for path in COMMAND_MODULES:
        tree = _tree(path)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(d, ast.Name) and d.id == "user_errors" for d in node.decorator_list):
                yield path, node


def test_each_command_makes_one_library_call():
    """A command body: imports, at most one `with runtime.open(...)`, one call into the package's library
    (a name imported from litevae_cli inside the body, or the module's own one-call helper), then printing."""
    for path, fn in _command_functions():
        imported = {a.asname or a.name for n in ast.walk(fn) if isinstance(n, ast.ImportFrom)
                    and (n.module or "").startswith("litevae_cli") and n.module != "litevae_cli" for a in n.names}
        helpers = {n.name for n in _tree(path).body if isinstance(n, ast.FunctionDef) and n.name.startswith("_")
                   and n is not fn}
        calls = [n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id in imported | helpers]
        library = [c for c in calls if c not in {"resolve_options"}]  # eval: option resolution before the runtime
        assert len(library) == 1, f"{path.name}:{fn.name} calls {calls}: one library call expected"
        assert not any(isinstance(n, (ast.If, ast.For, ast.While)) and _raises(n) for n in ast.walk(fn)), \
            f"{path.name}:{fn.name} validates options itself; the library owns its checks"


def _raises(node) -> bool:
    return any(isinstance(n, ast.Raise) and not _is_exit(n) for n in ast.walk(node))


def _is_exit(node: ast.Raise) -> bool:
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(exc, ast.Attribute) and exc.attr == "Exit"


def test_a_shared_option_has_one_meaning():
    """Every option name means one thing across the commands: same type, default and help (a required
    option has no default to compare). Shared options come from cli/common.py."""
    import typer.main

    from litevae_cli.cli import app

    group = typer.main.get_command(app)
    seen: dict[str, tuple[str, tuple, str | None]] = {}
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name != "option":
                continue
            meaning = (repr(param.type_descriptor.annotation), param.min, param.max, param.is_flag, param.help)
            default = None if param.required else repr(param.default)
            for opt in [*param.opts, *param.secondary_opts]:  # a flag's --no- form counts too
                if opt not in seen:
                    seen[opt] = (name, meaning, default)
                    continue
                other, was, was_default = seen[opt]
                assert meaning == was, f"{opt}: {name} says {meaning}, {other} says {was}"
                assert None in (default, was_default) or default == was_default, \
                    f"{opt}: default {default} in {name}, {was_default} in {other}"
    for opt in ("--workers", "--weights-dir", "--no-ema", "--batch-size", "--resolution", "--limit", "--json"):
        assert opt in seen, opt


def test_boolean_options_are_flags_with_a_no_form():
    """A bool option takes no value: `--dry-run` / `--no-dry-run`, never `--dry-run true` (`--all`,
    `--version` and `--help` excepted: they have no off form worth naming)."""
    import typer.main

    from litevae_cli.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name == "option" and param.is_flag and param.opts[0] not in ("--all", "--help"):
                assert param.secondary_opts, f"{name} {param.opts[0]}: no --no- form"


def test_every_command_that_loads_a_model_takes_no_ema():
    import typer.main

    from litevae_cli.cli import app

    group = typer.main.get_command(app)
    # finetune (--from) and distill (--teacher, a --student MODEL) load models too
    for name in ("eval", "encode-dataset", "reconstruct", "inspect-latents", "export", "finetune", "distill"):
        assert any("--no-ema" in p.secondary_opts for p in group.commands[name].params), name
