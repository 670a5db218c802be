"""No import cycle between the packages of sar (module-level imports; a function-local import is how a lower
package may reach an upper one at run time, e.g. checkpoint loading -> sar.build)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sar"


def module_imports() -> dict[str, set[str]]:
    """Each sar module -> the sar modules it imports at module level (``from a.b import c`` imports ``a.b``)."""
    imports: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        module = ".".join(("sar", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        targets = imports.setdefault(module, set())
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sar."):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("sar."))
    return imports


def package_graph() -> dict[str, set[str]]:
    def unit(module: str) -> str:  # sar.data.formats.coco -> sar.data; sar.train -> sar.train
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module, targets in module_imports().items():
        for target in targets:
            if unit(target) != unit(module):
                edges.setdefault(unit(module), set()).add(unit(target))
    return edges


def on_a_cycle(edges: dict[str, set[str]]) -> list[str]:
    """The nodes of ``edges`` (node -> the nodes it imports) from which an import path leads back to them."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return sorted(node for node in edges if node in reach(node))


def test_no_import_cycles_between_packages() -> None:
    edges = package_graph()
    assert edges["sar.train"] >= {"sar.build", "sar.callbacks"}  # the graph is not empty by mistake
    cycles = on_a_cycle(edges)
    assert not cycles, f"packages on an import cycle: {cycles}"


def test_no_import_cycles_inside_the_synthetic_package() -> None:
    """The modules of sar.data.synthetic import one way (config <- shapes <- figure <- renderer <- coco <- formats
    <- cache <- preview <- cli); the package's __init__ counts as a module, so a submodule that imports from the
    package itself (``from sar.data.synthetic import ...``) closes a cycle through it."""
    package = "sar.data.synthetic"

    def inside(module: str) -> bool:
        return module == package or module.startswith(f"{package}.")

    edges = {m: {t for t in targets if inside(t)} for m, targets in module_imports().items() if inside(m)}
    assert edges[f"{package}.renderer"] >= {f"{package}.figure", f"{package}.config"}  # not empty by mistake
    cycles = on_a_cycle(edges)
    assert not cycles, f"modules of {package} on an import cycle: {cycles}"


def test_every_target_in_the_configs_resolves() -> None:
    """Each `_target_` of conf/ names an importable object (Hydra resolves package attributes first: a function
    re-exported under a module's name would hide that module)."""
    import re

    from hydra.utils import get_object
    from sar.conf import CONF_DIR

    pattern = re.compile(r"^\s*-?\s*_target_:\s*([\w.]+)", re.MULTILINE)
    targets = {m for p in CONF_DIR.rglob("*.yaml") for m in pattern.findall(p.read_text())}
    assert "sar.evaluation.pck.MpiiEvaluator" in targets and len(targets) > 20
    for target in sorted(targets):
        assert callable(get_object(target)), target
