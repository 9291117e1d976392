"""The core is built in floors, each importing only the floors below it, with no cycle.

The import graph comes from grimp (import-linter's engine), which reads every import
statement of every module, function-level ones included.
"""

from __future__ import annotations

import grimp
import pytest

FLOORS: tuple[str | set[str], ...] = (
    "t2i.cli",
    "t2i.compare",
    "t2i.testing",
    {"t2i.shapes", "t2i.xyz"},
    {"t2i.engine", "t2i.matrix"},
    "t2i.plugins",
    "t2i.builtins",
    {
        "t2i.diffusion",
        "t2i.autoregressive",
        "t2i.single_pass",
        "t2i.training",
        "t2i.text",
        "t2i.recipe",
        "t2i.request",
        "t2i.result",
    },
    "t2i.graph",
    "t2i.registry",
    "t2i.contracts",
    "t2i.payloads",
    "t2i.lora",
    {
        "t2i.noise",
        "t2i.logs",
        "t2i.memory",
        "t2i.checkpoints",
        "t2i.infotext",
        "t2i.prompts",
        "t2i.outputs",
        "t2i.masking",
    },
    {"t2i.files", "t2i.version", "t2i.kinds", "t2i.fp8", "t2i.modules"},
)
"""Top to bottom; modules of one set are siblings and may not import each other."""


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("t2i", cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_in_the_core(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_core_module_sits_on_a_floor(graph):
    floors = [{f} if isinstance(f, str) else f for f in FLOORS]
    placed = {m for floor in floors for m in floor}
    top = {m.split(".")[1] for m in graph.modules if m.count(".") >= 1}
    missing = sorted(f"t2i.{t}" for t in top if f"t2i.{t}" not in placed)
    assert not missing, f"modules on no floor (add them to FLOORS): {missing}"


def test_floors_import_only_downward(graph):
    layers = [grimp.Layer(f) if isinstance(f, str) else grimp.Layer(*sorted(f)) for f in FLOORS]
    illegal = graph.find_illegal_dependencies_for_layers(layers=layers)
    lines = []
    for dep in sorted(illegal, key=lambda d: (d.importer, d.imported)):
        for route in dep.routes:
            chain = " -> ".join((*route.heads, *route.middle, *route.tails))
            lines.append(f"{dep.importer} imports {dep.imported}: {chain}")
    assert not illegal, "imports that go up or sideways:\n" + "\n".join(lines[:30])


def test_the_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

    class Fake:
        modules = frozenset(edges)

        def find_modules_directly_imported_by(self, m):
            return edges[m]

    assert _cycles(Fake()) == [["a", "b", "c"]]


def test_every_core_module_imports(graph):
    import importlib

    failures = []
    for name in sorted(graph.modules):
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every module that cannot be imported
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


def test_discovering_the_core_plugins_imports_no_torch():
    from t2i.testing import heavy_imports_of_discovery

    loaded = heavy_imports_of_discovery("", check="assert m.registry.names('sampler')")
    assert loaded == {"torch": False, "transformers": False}
