"""The shape of the code: an acyclic import graph, math modules free of plugin machinery, short functions."""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MATH_MODULES = ("ddo.schedules", "ddo.dct", "ddo.noise", "ddo.diffusion", "ddo.sampling", "ddo.models",
                "ddo.models.fno_unet", "ddo.models.spectral")
PLUGIN_MACHINERY = ("ddo.plugins", "ddo.builtins", "ddo.hookspecs", "ddo.registry", "ddo.cli", "ddo.commands",
                    "ddo.arguments", "ddo.options", "ddo.train")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """``module -> modules of the package it imports``, function-level imports included."""
    files = {_module_name(p): p for p in (REPO / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from . import x" imports the submodule x, not (beyond Python's parent import) the package
                targets = ([base] if node.module else []) + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["ddo", "ddo_conditional"])
def test_import_graph_is_acyclic(package):
    graph = import_graph(package)
    assert len(graph) > 5
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_math_modules_import_no_plugin_machinery():
    graph = import_graph("ddo")

    def reach(module, seen=None):
        seen = set() if seen is None else seen
        for dep in graph[module]:
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    for module in MATH_MODULES:
        assert not reach(module) & set(PLUGIN_MACHINERY), module


def test_host_names_no_plugin_command_or_flag():
    words = ("ddo_conditional", "reconstruct", "demo", "sparse-[a-z]+", "mask-seed", "context_ratio")
    for path in (REPO / "ddo").rglob("*.py"):
        text = path.read_text()
        for word in words:
            found = re.search(rf"\b{word}\b", text)
            assert found is None, f"{path.relative_to(REPO)} names {found.group()!r}"


def long_functions(package: str, limit: int = 60) -> list[str]:
    out = []
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out.append(f"{path.relative_to(REPO)}:{node.name} ({length} lines)")
    return out


@pytest.mark.parametrize("package", ["ddo", "ddo_conditional"])
def test_no_function_over_60_lines(package):
    assert long_functions(package) == []


def host_imports(package: str) -> dict[str, set[str]]:
    """``file -> ddo modules it imports`` (module-level and function-level) for the files of ``package``."""
    out = {}
    for path in (REPO / package).rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name == "ddo" or a.name.startswith("ddo.")}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module and (
                    node.module == "ddo" or node.module.startswith("ddo.")):
                found.add(node.module)
        out[str(path.relative_to(REPO))] = found
    return out


def test_plugin_uses_the_host_public_api_only():
    imports = host_imports("ddo_conditional")
    assert sum(1 for mods in imports.values() if mods) > 5
    offending = {f: sorted(m - {"ddo.api"}) for f, m in imports.items() if m - {"ddo.api"}}
    assert offending == {}, f"the plugin imports host internals (use ddo.api): {offending}"
    import ddo.api

    assert all(hasattr(ddo.api, name) for name in ddo.api.__all__)


def test_public_api_check_finds_a_planted_internal_import(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("from ddo.api import UserError\nfrom ddo.train import train\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert host_imports("pkg") == {"pkg/a.py": {"ddo.api", "ddo.train"}}


def wide_functions(package: str, limit: int = 8) -> list[str]:
    """Functions of ``package`` that take more than ``limit`` parameters (``self``/``cls`` not counted)."""
    out = []
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                n = len([x for x in names if x not in ("self", "cls")]) + bool(a.vararg) + bool(a.kwarg)
                if n > limit:
                    out.append(f"{path.relative_to(REPO)}:{node.name} ({n} parameters)")
    return out


def test_plugin_functions_take_at_most_8_parameters_and_modules_stay_under_300_lines():
    assert wide_functions("ddo_conditional") == []
    long_modules = {str(p.relative_to(REPO)): n for p in (REPO / "ddo_conditional").rglob("*.py")
                    if (n := len(p.read_text().splitlines())) > 300}
    assert long_modules == {}


def test_evaluation_writes_no_file():
    """evaluate.py computes; report.py writes: no file API in evaluate.py."""
    text = (REPO / "ddo_conditional" / "inference" / "evaluate.py").read_text()
    tree = ast.parse(text)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"open", "atomic_write", "save_grid", "write_text", "write_bytes", "save", "mkdir", "print"}
