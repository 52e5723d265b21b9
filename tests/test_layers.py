"""The layers contract: imports inside the package run one way, from the public face down to
the errors, and never in a circle; no module imports another's private name; code outside
``families/`` asks the family object instead of testing its name.

The layers, top to bottom (docs/theory.md draws them):

    midas_glmm (the package), model, cli, plots  →  many  →  results  →  posthoc  →  engine
    →  design  →  families  →  linalg  →  errors, checks, datasets, distributions

A module may import from its own layer or any layer below it. Every import counts, those
written inside functions too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "midas_glmm"

LAYERS = [
    ("midas_glmm", "midas_glmm.model", "midas_glmm.cli", "midas_glmm.plots"),
    ("midas_glmm.many",),
    ("midas_glmm.results",),
    ("midas_glmm.posthoc",),
    ("midas_glmm.engine",),
    ("midas_glmm.design",),
    ("midas_glmm.families",),
    ("midas_glmm.linalg",),
    ("midas_glmm.errors", "midas_glmm.checks", "midas_glmm.datasets", "midas_glmm.distributions"),
]


def layer_of(module: str) -> int:
    """The index of the layer holding ``module`` (the longest matching name wins)."""
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    if rank is None:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS")
    return rank


def module_sources(root: pathlib.Path = PACKAGE) -> dict[str, tuple[str, bool]]:
    """Dotted module name → (source, is a package's __init__)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        init = parts[-1] == "__init__"
        out[".".join(parts[:-1] if init else parts)] = (f.read_text(encoding="utf-8"), init)
    return out


def imports(sources: dict[str, tuple[str, bool]]) -> list[tuple[str, str, str, int]]:
    """Every import of one of the package's modules: (importer, imported module, name, line).
    ``from .x import y`` counts as an import of module ``.x.y`` when that is a module."""
    out = []
    for module, (text, init) in sources.items():
        package = module if init else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                out += [(module, a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "midas_glmm"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == "midas_glmm":
                    target = node.module
                else:
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.append((module, sub if sub in sources else target, a.name, node.lineno))
    return out


def upward_imports(sources) -> list[str]:
    return [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)}), line {line}"
        for src, dst, _, line in imports(sources)
        if layer_of(dst) < layer_of(src)
    ]


def cycles(sources) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for src, dst, _, _ in imports(sources):
        if dst != src and dst in graph and not (sources[src][1] and dst.startswith(src + ".")):
            graph[src].add(dst)  # a package's __init__ re-exporting its own modules is no circle
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def private_imports(sources) -> list[str]:
    return [
        f"{src} imports the private name {name} from {dst}, line {line}"
        for src, dst, name, line in imports(sources)
        if name.startswith("_") and not name.startswith("__")
    ]


def _is_name_of_family(node: ast.AST) -> bool:
    """``<something family-like>.name``: fam.name, family.name, res.family.name, self.family.name."""
    if not (isinstance(node, ast.Attribute) and node.attr == "name"):
        return False
    owner = node.value
    label = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
    return "fam" in label.lower()


def _is_text(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_text(e) for e in node.elts)
    return False


def family_name_tests(sources) -> list[str]:
    """Comparisons of a family's name with text (``fam.name == "binomial"``, ``family.name in
    (...)``) outside ``midas_glmm.families``."""
    out = []
    for module, (text, _) in sources.items():
        if module.startswith("midas_glmm.families"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_is_name_of_family(s) for s in sides) and any(_is_text(s) for s in sides):
                    out.append(f"{module}, line {node.lineno}: {ast.unparse(node)}")
    return out


# ---------------------------------------------------------------------------------------- the contract
def test_every_module_is_in_a_layer():
    for module in module_sources():
        layer_of(module)


def test_imports_only_go_down_the_layers():
    assert upward_imports(module_sources()) == []


def test_no_import_circle():
    assert cycles(module_sources()) == []


def test_no_private_name_is_imported_from_another_module():
    assert private_imports(module_sources()) == []


def test_families_answer_for_themselves():
    assert family_name_tests(module_sources()) == []


def test_at_least_four_subpackages():
    packages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").exists() and p.name != "datasets"]
    assert len(packages) >= 4


# ---------------------------------------------------------------------------------------- the checks can fail
@pytest.fixture
def fake():
    """A copy of the package's sources to break on purpose."""
    return dict(module_sources())


def test_an_upward_import_fails_the_contract(fake):
    text, init = fake["midas_glmm.engine.lmm"]
    fake["midas_glmm.engine.lmm"] = (text + "\ndef f():\n    from ..results import MixedModelResults\n", init)
    found = upward_imports(fake)
    assert len(found) == 1 and "midas_glmm.engine.lmm" in found[0] and "midas_glmm.results" in found[0]


def test_a_circle_fails_the_contract(fake):
    text, init = fake["midas_glmm.design.columns"]
    fake["midas_glmm.design.columns"] = (text + "\nfrom .design import Design\n", init)
    assert any("midas_glmm.design.columns" in c and "midas_glmm.design.design" in c for c in cycles(fake))


def test_a_private_import_and_a_name_test_fail_the_contract(fake):
    text, init = fake["midas_glmm.posthoc.r2"]
    extra = "\nfrom ..design.columns import _missing_column\n\ndef g(res):\n    return res.family.name == 'poisson'\n"
    fake["midas_glmm.posthoc.r2"] = (text + extra, init)
    assert any("_missing_column" in p for p in private_imports(fake))
    assert any("poisson" in t for t in family_name_tests(fake))
