"""The module layout: the network knows nothing of the toolkit, lower-level modules never import higher ones,
no import cycle, no private Hydra API. Imports are read from the source (those inside functions too)."""
import ast
import functools

import pytest

from helpers import ROOT

# the toolkit's modules from the bottom up; a module may import only from its own level or below
LEVELS = [
    {"io", "seeding", "paper", "distributed", "stats"},
    {"provenance", "data"},
    {"corruptions"},
    {"config"},
    {"device", "cli", "rundir", "complexity", "autotune"},
    {"engine", "robustness"},
    {"train", "bench", "report"},
    {"plan", "__main__"},
]
LEVEL = {name: i for i, names in enumerate(LEVELS) for name in names}


def imports(path) -> set[str]:
    """Absolute names of the modules a source file imports (relative imports resolved)."""
    package = path.parent.name
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = f"{package}.{node.module}" if node.level else node.module
            names.add(base if node.module else package)
            if node.level and not node.module:  # `from . import x`: x is a module, or a name of __init__
                names |= {f"{package}.{alias.name}" for alias in node.names
                          if (path.parent / f"{alias.name}.py").exists()}
    return names


@functools.cache
def graph(package: str) -> dict[str, set[str]]:
    """{module: the modules of `package` it imports}."""
    files = sorted((ROOT / package).glob("*.py"))
    return {f.stem: {n.split(".")[1] for n in imports(f) if n.startswith(f"{package}.")} - {f.stem}
            for f in files if f.stem != "__init__"}


def test_every_toolkit_module_has_a_level():
    assert set(graph("ablate")) == set(LEVEL)


@pytest.mark.parametrize("module", sorted(LEVEL))
def test_no_module_imports_a_higher_level(module):
    higher = {m for m in graph("ablate")[module] if LEVEL[m] > LEVEL[module]}
    assert not higher, f"ablate.{module} (level {LEVEL[module]}) imports {higher}"


def test_measuring_tools_share_the_engine_not_the_run():
    """bench and plan time what a run trains with (ablate.engine); only the CLI drives a run (ablate.train)."""
    importers = {m for m, deps in graph("ablate").items() if "train" in deps}
    assert importers == {"__main__"}


@pytest.mark.parametrize("package", ["ablate", "stages"])
def test_no_import_cycle(package):
    deps = graph(package)
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(module):] + [module])}")
        if module in done:
            return
        path.append(module)
        for dep in deps.get(module, ()):
            visit(dep)
        path.pop()
        done.add(module)

    for module in deps:
        visit(module)


def test_the_network_imports_nothing_of_the_toolkit_and_nobody_reaches_into_hydra():
    for f in (ROOT / "stages").glob("*.py"):
        assert not {n for n in imports(f) if n.split(".")[0] == "ablate"}, f
    for f in [*(ROOT / "ablate").glob("*.py"), *(ROOT / "stages").glob("*.py")]:
        assert not {n for n in imports(f) if n.startswith("hydra._internal")}, f
