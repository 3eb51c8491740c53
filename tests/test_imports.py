"""What imports what: imports run one way (docs/architecture.md), and the command line starts without the
heavy libraries a command does not use. Import checks, not timings (those are in the report of the change:
`ecgtune validate` of an empty file took ~2.5 s with torch, ~0.2 s without)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ecgtune"
# torch and Ray take seconds to import on these cores, pandas a third of one.
HEAVY = ("torch", "ray", "pandas")


def _imported_after(argv: list[str], cwd: Path) -> dict[str, object]:
    """Run `ecgtune ARGV` in a fresh interpreter; its exit status and which of HEAVY it imported."""
    code = (
        "import json, sys\n"
        "from ecgtune.cli import main\n"
        "try:\n"
        f"    status = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    status = e.code\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'status': status, 'heavy': heavy}), file=sys.stderr)\n"
    )
    # cwd: the repository, so the ecgtune imported is this tree's (python -c puts cwd first on sys.path)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["--help"], 0),
        (["sweep", "--help"], 0),
        (["validate", "{empty}"], 2),
        (["validate", "{broken}"], 2),
        (["validate", "{empty}", "--set", "search.num_samples=1"], 2),
    ],
    ids=["help", "sweep-help", "validate-empty", "validate-broken-yaml", "validate-override"],
)
def test_help_and_a_spec_refused_before_its_model_check_import_no_torch_ray_or_pandas(
    argv: list[str], status: int, tmp_path: Path
) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "broken.yaml").write_text("name: [\n")
    argv = [a.format(empty=tmp_path / "empty.yaml", broken=tmp_path / "broken.yaml") for a in argv]
    got = _imported_after(argv, REPO)
    assert got == {"status": status, "heavy": []}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """ecgtune module -> the ecgtune modules it imports, at top level or inside a function (a lazy import
    still runs one way or the other)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                imported.add(node.module)
                imported |= {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names} & set(modules)
        graph[name] = imported - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles of `graph`: its strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_run_one_way_but_for_the_documented_exception() -> None:
    """docs/architecture.md: one exception, `ecgtune.spec.sample_params` resolving lazily to the sampler's
    (sweeps saved before the sampler moved must resume). Any other cycle, lazy or not, is a module that
    owns less than it should (the PTB-XL reader and the simulator once imported each other)."""
    graph = _import_graph()
    assert "ecgtune.data.simulated_ptbxl" in graph and "ecgtune.data.ptbxl" in graph  # the walk sees them
    assert _cycles(graph) == [{"ecgtune.spec", "ecgtune.sampler"}]
