"""The shape of the code: an acyclic import graph, math modules free of plugin machinery, short functions,
the plugins' packages importing downward only, parsing ended at the command layer, the PDE plugin kept apart."""
import ast
import re
import subprocess
import sys
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
    words = ("ddo_conditional", "reconstruct", "demo", "sparse-[a-z]+", "mask-seed", "context_ratio", "routes?",
             "kriging", "observe", "[a-z-]+-pair")
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


# --- the shape of the plugins: packages by responsibility, arrows downward, parsing in the command layer ---
PLUGIN = "ddo_conditional"
# a module may import its own package and packages of a lower rank only (the package's __init__ is its
# public face and may import any package below the command layer)
RANKS = {"data": 0, "classical": 1, "nn": 1, "losses": 1, "inference": 2, "options": 2, "io": 3, "wrappers": 3,
         "cli": 4, "plugin": 5, "pde": 6}
COMMAND_LAYER = ("ddo_conditional/cli/", "ddo_conditional/pde/cli.py", "ddo/cli.py", "ddo/commands.py",
                 "ddo/arguments.py")
PDE_DATASETS = ("navier-stokes-pair", "darcy-pair")


def upward_imports(graph: dict[str, set[str]], ranks: dict[str, int]) -> list[str]:
    """``a -> b`` for every import of a package of higher rank than the importer's (or of an unranked one)."""
    def part(module):
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else "__init__"

    out = []
    for module, deps in graph.items():
        here = part(module)
        for dep in deps:
            there = part(dep)
            if here == there:
                continue
            limit = ranks["cli"] if here == "__init__" else ranks.get(here, -1)
            if ranks.get(there, 99) >= limit:
                out.append(f"{module} -> {dep}")
    return sorted(out)


def test_plugin_packages_import_only_downward():
    graph = import_graph(PLUGIN)
    top = sorted(p.name for p in (REPO / PLUGIN).glob("*.py"))
    assert len(top) <= 8, top
    assert {p.name for p in (REPO / PLUGIN).iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "data", "nn", "inference", "classical", "io", "cli", "pde"}
    assert upward_imports(graph, RANKS) == []


def test_the_layer_check_finds_a_planted_upward_import():
    graph = {"ddo_conditional.data.masks": {"ddo_conditional.inference.evaluate"},
             "ddo_conditional.inference.evaluate": {"ddo_conditional.data.masks"},
             "ddo_conditional.cli.reconstruct": {"ddo_conditional.pde.routes"}}
    assert upward_imports(graph, RANKS) == ["ddo_conditional.cli.reconstruct -> ddo_conditional.pde.routes",
                                            "ddo_conditional.data.masks -> ddo_conditional.inference.evaluate"]


def functions_taking_args(paths) -> list[str]:
    """``file:function`` for every function with a parameter named ``args`` (the parsed flags)."""
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                if "args" in [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]:
                    out.append(f"{path.name}:{node.name}")
    return out


def test_no_function_below_the_command_layer_takes_the_parsed_flags(tmp_path):
    below = [p for pkg in ("ddo", PLUGIN) for p in (REPO / pkg).rglob("*.py")
             if not str(p.relative_to(REPO)).startswith(COMMAND_LAYER)]
    assert len(below) > 40
    assert functions_taking_args(below) == []
    planted = tmp_path / "planted.py"
    planted.write_text("def check(config, args):\n    return args['limit']\n")
    assert functions_taking_args([planted]) == ["planted.py:check"]


def pde_names_outside(paths) -> list[str]:
    """``file:line`` of every string constant naming a PDE dataset."""
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in PDE_DATASETS:
                out.append(f"{path.name}:{node.lineno}")
    return out


def test_pde_datasets_are_named_only_inside_the_pde_plugin(tmp_path):
    outside = [p for pkg in ("ddo", PLUGIN) for p in (REPO / pkg).rglob("*.py") if "pde" not in p.parts]
    assert pde_names_outside(outside) == []
    assert pde_names_outside((REPO / PLUGIN / "pde").rglob("*.py"))  # the check sees them where they are
    planted = tmp_path / "planted.py"
    planted.write_text("def f(kind):\n    return kind == 'darcy-pair'\n")
    assert pde_names_outside([planted]) == ["planted.py:2"]


def test_importing_the_generic_plugin_loads_no_solver():
    code = ("import sys, ddo_conditional.plugin, ddo_conditional\n"
            "print(sorted(m for m in sys.modules if m.startswith('ddo_conditional.pde')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
    planted = ("import sys, ddo_conditional.pde.routes\n"
               "print(sorted(m for m in sys.modules if m.startswith('ddo_conditional.pde')))")
    out = subprocess.run([sys.executable, "-c", planted], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "ddo_conditional.pde.solvers" in out  # the probe sees a solver when one is imported


def test_readme_is_a_guide_of_at_most_300_lines():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    for section in ("## The two commands", "## Usage", "## Concepts", "## Python API", "## Architecture",
                    "## Guarantees", "## Limitations", "## Dependencies"):
        assert section in lines, section
