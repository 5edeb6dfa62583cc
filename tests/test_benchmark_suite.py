"""The benchmarks as a suite: results/ holds exactly the JSON the READMEs and the docs/ pages cite (each by its
file name),
every cited file exists, and no benchmark reaches into the packages' private names or assigns to their
attributes."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RESULTS = BENCHMARKS / "results"
READMES = (REPO / "README.md", BENCHMARKS / "README.md", *sorted((REPO / "docs").glob("*.md")))
PACKAGES = ("ddo", "ddo_conditional")


def readme_text() -> str:
    return "\n".join(p.read_text() for p in READMES)


def cites_by_name(text: str, name: str) -> bool:
    """``name`` appears as a whole file name (not as the tail of a longer one)."""
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text) is not None


def uncited_results(text: str, names) -> list[str]:
    return sorted(n for n in names if not cites_by_name(text, n))


def cited_results(text: str) -> set[str]:
    """JSON names the text cites as result files: ``results/NAME.json`` (with or without ``benchmarks/``)
    and bare ``results_*.json`` names."""
    found = set(re.findall(r"(?<![\w.-])results/([\w.-]+\.json)", text))
    return found | set(re.findall(r"(?<![\w./-])(results_[\w.-]+\.json)", text))


def pattern_citations(text: str) -> list[str]:
    """Result files cited by a pattern (braces, globs, placeholders) instead of by name."""
    return re.findall(r"(?<![\w.-])(?:results/|results_)[\w.-]*[{*<\[][^\s`)]*", text)


def cited_paths(text: str) -> set[str]:
    """Scripts and documentation files the text names by path."""
    return set(re.findall(r"(?<![\w./-])((?:benchmarks|docs)/[\w.-]+\.(?:py|sh|json|png|csv|md))", text))


def test_every_result_file_is_cited_by_name():
    names = [p.name for p in RESULTS.iterdir() if p.is_file()]
    assert names, "benchmarks/results/ is empty"
    uncited = uncited_results(readme_text(), names)
    assert uncited == [], f"files in benchmarks/results/ that no README cites by name: {uncited}"


def test_every_cited_result_file_exists_and_none_is_cited_by_pattern():
    text = readme_text()
    cited = cited_results(text)
    assert cited, "the READMEs cite no result file"
    missing = sorted(n for n in cited if not (RESULTS / n).is_file())
    assert missing == [], f"result files the READMEs cite that benchmarks/results/ lacks: {missing}"
    patterns = pattern_citations(text)
    assert patterns == [], f"result files cited by a pattern instead of by name: {patterns}"


def test_every_cited_script_and_document_exists():
    missing = sorted(p for p in cited_paths(readme_text()) if not (REPO / p).is_file())
    assert missing == [], f"paths the READMEs cite that do not exist: {missing}"


def test_citation_checks_can_fail():
    text = ("see `results/a.json`, benchmarks/results/results_b.json and results_c.json; `results/x_{1,2}.json`, "
            "`results_d_*`")
    assert cited_results(text) == {"a.json", "results_b.json", "results_c.json"}
    assert uncited_results(text, ["a.json", "b.json", "results_a.json"]) == ["b.json", "results_a.json"]
    assert pattern_citations(text) == ["results/x_{1,2}.json", "results_d_*"]
    assert cited_paths("`benchmarks/gone.py` and docs/x.png") == {"benchmarks/gone.py", "docs/x.png"}


# --- the benchmarks use the packages' public interface -------------------------------------------


def _from_package(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in PACKAGES


def _root_name(node: ast.AST) -> str | None:
    """The name an expression such as ``a.b(c)[0].d`` starts from."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript, ast.Starred)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _target_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _target_names(elt)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def imported_names(tree: ast.AST) -> set[str]:
    """Names bound by importing a module of the packages or a name from one."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if _from_package(a.name)}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _from_package(node.module):
            names |= {a.asname or a.name for a in node.names}
    return names


def library_names(tree: ast.AST) -> set[str]:
    """Names bound to the packages' modules or objects: imported from them, or assigned (also as loop and
    comprehension variables, and through ``with ... as``) from an expression rooted in such a name, e.g.
    ``gen_sde, wrapper = build_model(...)`` and ``for m in gen_sde.network.modules()``."""
    bound = imported_names(tree)
    pairs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            pairs += [(t, node.value) for t in targets]
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            pairs.append((node.target, node.iter))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            pairs.append((node.optional_vars, node.context_expr))
    changed = True
    while changed:
        changed = False
        for target, value in pairs:
            if _root_name(value) in bound:
                new = set(_target_names(target)) - bound
                bound |= new
                changed = changed or bool(new)
    return bound


def private_uses(source: str) -> list[str]:
    """Private names (one leading underscore, not dunder) imported from the packages or read from them."""
    tree = ast.parse(source)
    private = lambda name: name.startswith("_") and not name.startswith("__")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _from_package(node.module):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names if private(a.name)]
            if any(private(part) for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if _from_package(a.name) and any(private(part) for part in a.name.split("."))]
    modules = imported_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and _root_name(node.value) in modules:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def attribute_assignments(source: str) -> list[str]:
    """Assignments to an attribute of the packages' modules or of objects obtained from them
    (``spectral.X = ...``, ``gen_sde.network = ...``, ``setattr(layer, ...)``)."""
    tree = ast.parse(source)
    bound = library_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and _root_name(node.args[0]) in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
            continue
        else:
            continue
        flat = [t for target in targets for t in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target])]
        for t in flat:
            if isinstance(t, ast.Attribute) and _root_name(t.value) in bound:
                found.append(f"line {node.lineno}: {ast.unparse(t)} = ...")
    return found


def benchmark_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(BENCHMARKS.glob("*.py"))}


def test_no_benchmark_uses_a_private_name_of_the_packages():
    offenders = {name: found for name, src in benchmark_sources().items() if (found := private_uses(src))}
    assert offenders == {}, f"benchmarks using private names of {PACKAGES}: {offenders}"


def test_no_benchmark_assigns_to_an_attribute_of_the_packages():
    offenders = {name: found for name, src in benchmark_sources().items() if (found := attribute_assignments(src))}
    assert offenders == {}, f"benchmarks assigning to attributes of {PACKAGES} or their objects: {offenders}"


def test_interface_checks_can_fail():
    planted = (
        "import ddo.models.spectral as sp\n"
        "from ddo.models.spectral import _KeptModes, dense_dft_matrices\n"
        "from ddo_conditional.inference import evaluate\n"
        "from ddo.train import build_model\n"
        "import torch\n"
        "sp.INFERENCE_DENSE_MAX_PIXELS = {}\n"
        "evaluate.LIMIT += 1\n"
        "y = sp._FromModes\n"
        "gen_sde, wrapper = build_model({}, None)\n"
        "gen_sde.network = torch.compile(gen_sde.network)\n"
        "for m in gen_sde.network.modules():\n"
        "    m.dense_max_pixels = 0\n"
        "    setattr(m, 'mix_dtype', None)\n"
        "x = torch.zeros(1)\n"
        "x.requires_grad = True\n"
    )
    assert private_uses(planted) == ["line 2: from ddo.models.spectral import _KeptModes", "line 8: sp._FromModes"]
    assert attribute_assignments(planted) == [
        "line 6: sp.INFERENCE_DENSE_MAX_PIXELS = ...", "line 7: evaluate.LIMIT = ...",
        "line 10: gen_sde.network = ...", "line 12: m.dense_max_pixels = ...",
        "line 13: setattr(m, 'mix_dtype', None)"]
