"""Layers point one way (DESIGN §2): every import, at module level or inside a function,
goes to a layer on the left, and no two modules import each other (directly or round a
loop). The imports are read from the source with ``ast``, so an import that only runs on
some code path counts as much as one at the top of a file. There is no exceptions list."""

from __future__ import annotations

import ast
from pathlib import Path

import finscale

PACKAGE = Path(finscale.__file__).parent

# The full order, left (lowest) to right. A top-level module (a file or a sub-package of
# finscale) may import only modules listed before it. Shared low-level helpers sit at the left:
# the version string, configuration, atomic file writing, seeding, stop requests and sensors.
LAYERS = (
    "version",      # the installed version (recorded by the data store and exports)
    "formatting",   # numbers as text: the display rules of the CLI, the report and sentences
    "config",       # frozen dataclasses per stage, TOML loading
    "study_axes",   # study axes: variants of a study, their tags
    "atomic",       # atomic file writing
    "repro",        # seeding, environment record
    "stopping",     # stop requests (signals, STOP file)
    "monitor",      # sensors -> policy -> continue/pause/stop
    "data",
    "features",
    "labels",
    "splits",
    "windows",
    "model",
    "checkpoint",   # atomic save/load of training state
    "rundir",       # run-directory files
    "metrics",      # classification metrics (validation in train, test in evaluate)
    "convergence",  # guard 14 rules for runs and HPO cells (pure functions)
    "train",
    "rundata",      # study -> a run's data (features, labels, splits, windows)
    "runspec",      # run specifications and run-directory start (HPO trials and final runs)
    "selection",    # the cells and runs a study expands into, for a filter (pure)
    "trained_run",  # a finished run from its directory: load, predict
    "tracking",     # optional MLflow logging of runs and trials
    "tracking_model",  # a final run's model as an MLflow pyfunc (wraps serving)
    "hpo",
    "evaluate",
    "study_runs",   # a study's run directories as tidy tables (read by scaling and report)
    "scaling",
    "testing",      # test and benchmark helpers: a random-walk market, interval coverage by simulation
    "report",
    "runner",
    "doctor",       # checks a study and the machine (reads the runner's plan)
    "finscale",     # the package root: the public Python API
    "cli",
    "__main__",
)
RANK = {name: i for i, name in enumerate(LAYERS)}


def _module_name(path: Path) -> str:
    parts = ["finscale", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _all_modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """finscale modules ``name`` imports anywhere in its file (resolved to modules)."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    return _parse_imports(MODULES[name].read_text(), package)


def _parse_imports(source: str, package: str) -> set[str]:
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m == "finscale" or m.startswith("finscale.")}


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "finscale"


def test_every_module_has_a_layer():
    unplaced = sorted({_layer(m) for m in MODULES} - set(RANK))
    assert not unplaced, f"add these top-level modules to LAYERS: {unplaced}"


def test_imports_point_left():
    wrong = []
    for name in MODULES:
        for target in _imports(name):
            if target not in MODULES:
                wrong.append(f"{name} imports {target}, which does not exist")
                continue
            src, dst = _layer(name), _layer(target)
            if src != dst and RANK[dst] > RANK[src]:
                wrong.append(f"{name} ({src}) imports {target} ({dst}), a layer to its right")
    assert not wrong, "\n".join(sorted(wrong))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_between_modules():
    graph = {name: {t for t in _imports(name) if t in MODULES and t != name} for name in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycles_between_layers():
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        for target in _imports(name):
            if target in MODULES and _layer(target) != _layer(name):
                graph.setdefault(_layer(name), set()).add(_layer(target))
    cycle = _cycle(graph)
    assert cycle is None, "layer cycle: " + " -> ".join(cycle)


def test_the_checker_sees_lazy_relative_and_module_imports():
    """The rule must hold for an import inside a function too (the easiest way to hide a loop)."""
    source = ("def f():\n    from finscale.runner.study import run_study\n"
              "from . import sensors\nimport finscale.data\nfrom finscale import tracking\n")
    assert _parse_imports(source, "finscale.monitor") == {
        "finscale.runner.study", "finscale.monitor.sensors", "finscale.data", "finscale.tracking"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# The pipeline's stages take their own config section (FeaturesConfig, SplitsConfig, TrainConfig,
# ...), never the whole study: only the layers that join sections (rundata, runspec, hpo,
# evaluate's phase, scaling, report, runner and the CLI) see a StudyConfig.
STAGES = ("data", "features", "labels", "splits", "windows", "model", "checkpoint", "rundir",
          "metrics", "convergence", "train")


def test_stages_take_their_own_config_section():
    whole = []
    for name, path in MODULES.items():
        if _layer(name) not in STAGES:
            continue
        tree = ast.parse(path.read_text())
        names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        if "StudyConfig" in names:
            whole.append(name)
    assert not whole, f"these stage modules take the whole study config: {whole}"


def test_no_pipeline_module_imports_the_test_helpers():
    users = sorted(name for name in MODULES if _layer(name) != "testing"
                   and any(_layer(t) == "testing" for t in _imports(name)))
    assert not users, f"finscale.testing is for tests and benchmarks only; imported by {users}"
