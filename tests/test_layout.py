"""The module layout: the network knows nothing of the toolkit, lower-level modules never import higher ones,
no import cycle, no private Hydra API. Imports are read from the source (those inside functions too)."""
import ast
import functools
import subprocess
import sys

import pytest

from helpers import ROOT

# the toolkit's modules from the bottom up; a module may import only from its own level or below
LEVELS = [
    {"io", "seeding", "paper", "distributed", "stats", "errors", "corruption_suites", "roadmap"},
    {"provenance", "config"},                  # the config schema stands below everything that reads it
    {"record", "data", "corruptions"},
    {"device", "cli", "rundir", "complexity", "autotune"},
    {"engine", "robustness", "timm_models", "trackers"},
    {"train", "bench", "report", "export"},
    {"plan", "__main__"},
]
LEVEL = {name: i for i, names in enumerate(LEVELS) for name in names}


def imports(path) -> set[str]:
    """Absolute names of the modules a source file imports (relative imports resolved, from sub-packages too)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = ".".join(parts[:-1])  # the package a relative import starts from (an __init__'s own package)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names.add((f"{base}.{node.module}" if node.module else base) if node.level else node.module)
            if node.level and not node.module:  # `from . import x`: x is a module, or a name of __init__
                where = ROOT.joinpath(*base.split("."))
                names |= {f"{base}.{alias.name}" for alias in node.names
                          if (where / f"{alias.name}.py").exists() or (where / alias.name).is_dir()}
    return names


def unit(path) -> str:
    """The module a file belongs to in the layering: its own stem, or its sub-package's name (ablate/data/*)."""
    parts = path.relative_to(ROOT).parts
    return parts[1] if len(parts) > 2 else path.stem


@functools.cache
def graph(package: str) -> dict[str, set[str]]:
    """{module (or sub-package): the modules of `package` it imports}."""
    deps: dict[str, set[str]] = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        if f.parent == ROOT / package and f.stem == "__init__":
            continue
        names = {n.split(".")[1] for n in imports(f) if n.startswith(f"{package}.")}
        deps.setdefault(unit(f), set()).update(names - {unit(f)})
    return deps


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


def test_the_schema_the_record_and_the_report_import_no_torch():
    """The config schema, the run record and the report's tables, statistics and figures need no torch: importing
    them loads neither torch nor timm (so a reader of results needs neither, and the report starts fast)."""
    code = ("import sys, ablate.config, ablate.record, ablate.report, ablate.corruption_suites; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ablate/data by concern, from the bottom up: the resize math, where images come from, the two pipelines, their order
DATA_LEVELS = [{"geometry"}, {"sources"}, {"per_sample", "batched"}, {"loaders"}, {"__init__"}]


def test_the_data_package_is_layered_by_concern():
    level = {name: i for i, names in enumerate(DATA_LEVELS) for name in names}
    files = {f.stem: f for f in (ROOT / "ablate" / "data").glob("*.py")}
    assert set(files) == set(level)
    for name, f in files.items():
        inside = {n.split(".")[2] for n in imports(f) if n.startswith("ablate.data.")}
        assert all(level[m] <= level[name] for m in inside), f"ablate.data.{name} imports {inside}"
