"""The package's layout, computed from its source: layers that only import downwards, no import cycle, modules of a
readable size, one place for each concern."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vggtransfer"

#: Lowest first: a module may import its own layer (without a cycle) and the layers below it, never one above.
LAYERS = (
    ("core",),
    ("nets",),
    ("weights",),
    ("data",),
    ("features",),
    ("models",),
    ("serving", "scale"),
    ("cli", "__main__"),  # ``python -m vggtransfer`` runs the CLI
)
#: "~400 lines" as `ruff format` writes them (it puts each argument of a long call on its own line).
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: dict) -> set:
    """Every vggtransfer module ``path`` imports, at module level or inside functions (a lazy import is still a
    dependency), with ``from package import submodule`` resolved to the submodule."""
    tree = ast.parse(path.read_text(), str(path))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "vggtransfer")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vggtransfer":
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known)
    found.discard(own)
    return {m for m in found if m in known}


def graph() -> dict:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # the package root: the lazy public API and __version__, no static imports
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module}: not in a layer; every module belongs to one of {LAYERS}")


def test_the_root_imports_nothing_statically():
    assert graph()["vggtransfer"] == set()


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    wrong = [
        f"{m} (layer {LAYERS[layer_of(m)]}) imports {d} (layer {LAYERS[layer_of(d)]})"
        for m, deps in graph().items()
        for d in deps
        if layer_of(d) > layer_of(m)
    ]
    assert not wrong, "imports upwards:\n" + "\n".join(wrong)


def find_cycle(g: dict):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if dep == "vggtransfer" or node == "vggtransfer":
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle({m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph().items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_scanner_sees_lazy_and_submodule_imports(tmp_path, monkeypatch):
    g = graph()
    # a lazy import inside a function counts (the registry restores every kind)
    assert "vggtransfer.models.finetune" in g["vggtransfer.models.registry"]
    # `from vggtransfer.weights import sources` is an edge to the submodule
    assert "vggtransfer.weights.sources" in g["vggtransfer.cli.weights"]


def test_modules_are_short_or_say_why():
    long = []
    for name, path in modules().items():
        text = path.read_text()
        n = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n > MAX_LINES and not re.search(r"over 400 lines", doc):
            long.append(f"{name}: {n} lines")
    assert not long, "modules over ~400 lines without a reason at their top: " + ", ".join(long)


def test_every_package_says_what_it_holds():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init}: a package docstring saying what the layer holds"


@pytest.mark.parametrize(
    "pattern, home",
    [
        (r"requests\.Session\(\)", "vggtransfer/core/http.py"),  # the one HTTP session factory
        (r"tf\.nn\.conv2d\(", "vggtransfer/nets/vgg.py"),  # the one conv builder
        (r"\bint\(\w+\[4", None),  # architecture facts parsed from names
        (r"/\s*\(\s*\w+\s*\*\s*(np\.maximum\()?counts", "vggtransfer/data/splits.py"),  # balanced class weights
    ],
)
def test_one_place_for_each_concern(pattern, home):
    places = sorted(
        str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if re.search(pattern, p.read_text(), re.I)
    )
    assert places == ([home] if home else []), places


def test_one_minimum_image_size():
    """32 px (five 2x2 poolings) is declared once; every check compares with that constant, not with 32."""
    places = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(c, ast.Constant) and c.value == 32 for c in [node.left, *node.comparators]
            ):
                places.append(f"{path.name}:{node.lineno} compares with 32")
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and node.value.value == 32
                and any(isinstance(t, ast.Name) and "MIN" in t.id for t in node.targets)
            ):
                places.append(f"{path.relative_to(PACKAGE.parent)} declares it")
    assert places == ["vggtransfer/nets/cfg.py declares it"], places


def test_one_registry_restores_every_kind():
    """Every model class with a saved ``kind`` is reachable from the registry, and every kind restores through the
    same ``Model.load(dir)``; an unknown kind is a ModelError naming the known ones."""
    from vggtransfer.models import registry
    from vggtransfer.models.base import Model
    from vggtransfer.models.modeldir import ModelError

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    reachable = set(registry.KINDS.values()) | {
        registry.model_class({"kind": "auto", "task": "classification"}),
        registry.model_class({"kind": "auto", "task": "regression"}),
        registry.model_class({"kind": "auto", "task": "regression", "card": "Vgg16"}),
    }
    kinds = {cls for cls in subclasses(Model) if cls.kind and not cls.__subclasses__()}  # concrete kinds
    assert kinds <= reachable, kinds - reachable
    assert all(callable(getattr(cls, "load")) and callable(getattr(cls, "save")) for cls in reachable)
    with pytest.raises(ModelError, match="unknown model kind 'svm'.*auto, classifier, finetuned, linear, regressor"):
        registry.model_class({"kind": "svm"})


def test_the_type_checker_catches_a_call_to_a_missing_method(tmp_path):
    """CI runs mypy on the package: a call to a method that does not exist (the defect behind the old
    ``train --val-data`` crash) fails it."""
    import shutil
    import subprocess
    import sys

    if (
        shutil.which("mypy") is None
        and subprocess.run([sys.executable, "-m", "mypy", "--version"], capture_output=True).returncode != 0
    ):
        pytest.fail("mypy is not installed (it is in the [test] extra)")
    bad = tmp_path / "uses_the_library.py"
    bad.write_text(
        "from vggtransfer.models.classifier import VggClassifier\n\n\n"
        "def run(model: VggClassifier) -> None:\n    model.train_with_validation([])\n"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-error-summary",
            "--ignore-missing-imports",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(bad),
        ],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    )
    assert res.returncode == 1 and '"VggClassifier" has no attribute "train_with_validation"' in res.stdout, res.stdout


def test_the_public_api_is_listed_without_importing_tensorflow():
    """``dir(vggtransfer)`` (tab completion, help()) shows the lazy public names, and listing them imports nothing."""
    code = (
        "import sys, vggtransfer as v; names = dir(v); "
        "assert {'Vgg16', 'AutoClassifier', 'load_model', 'export_saved_model'} <= set(names), names; "
        "assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
