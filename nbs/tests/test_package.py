"""The package's shape: no import cycle between the modules of `contextrast/`, and no module over 450 lines.

The import graph is read from the source with `ast` (every `from .x import`, `from . import x`,
`from contextrast.x import`, `import contextrast.x`, wherever it stands, inside functions and
`__main__` blocks too), so a cycle is found without importing anything.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "contextrast"
MAX_LINES = 450
EXEMPT = {"_modidx.py"}          # nbdev's generated index of names


def imported_modules(path: Path, package: str, modules: set) -> set:
    "The modules of `package` (names in `modules`) that the source file `path` imports."
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level > 1: raise ValueError(f"{path}: relative import above the package (level {node.level})")
            if node.level == 1: base = node.module
            elif node.module == package or (node.module or "").startswith(package + "."):
                base = node.module[len(package) + 1:] or None
            else: continue
            if base is None: found.update(a.name for a in node.names)         # from . import x
            else: found.add(base.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(package + "."))
    return found & modules


def import_graph(directory: Path) -> dict:
    "Module name → the set of the package's modules it imports, for every `*.py` of `directory`."
    files = {p.stem: p for p in sorted(directory.glob("*.py"))}
    return {name: imported_modules(path, directory.name, set(files) - {name}) for name, path in files.items()}


def find_cycle(graph: dict):
    "One cycle of `graph` as a list of nodes that starts and ends at the same node (`[a, b, a]`), or None."
    state, stack = {}, []                      # state: 1 on the current path, 2 finished

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1: return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle: return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle: return cycle
    return None


def oversized(directory: Path, limit: int = MAX_LINES) -> dict:
    "File name → line count of every `*.py` of `directory` (but the exempt ones) longer than `limit` lines."
    counts = {p.name: len(p.read_text().splitlines()) for p in sorted(directory.glob("*.py")) if p.name not in EXEMPT}
    return {name: n for name, n in counts.items() if n > limit}


def test_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert {"evaluate", "trainer"} <= graph["cli"] and "loss" in graph["baselines"]      # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, f"contextrast has an import cycle: {' -> '.join(cycle)}"


def test_no_module_over_the_limit():
    assert len(list(PACKAGE.glob("*.py"))) > 10
    too_long = oversized(PACKAGE)
    assert not too_long, f"modules over {MAX_LINES} lines: " + ", ".join(f"{k} ({v})" for k, v in too_long.items())


def test_find_cycle_on_synthetic_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]
    assert find_cycle({}) is None


def test_a_cycle_in_a_package_is_found_and_named(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("import os\nfrom .util import helper\n")
    (pkg / "util.py").write_text("def helper(): pass\n")
    (pkg / "high.py").write_text("from .low import x\n\nif __name__ == '__main__':\n    import pkg.top\n")
    (pkg / "top.py").write_text("from pkg.high import y\nfrom . import util\n")
    graph = import_graph(pkg)
    assert graph == {"__init__": set(), "low": {"util"}, "util": set(), "high": {"low", "top"}, "top": {"high", "util"}}
    assert find_cycle(graph) == ["high", "top", "high"]
    (pkg / "high.py").write_text("from .low import x\n")
    assert find_cycle(import_graph(pkg)) is None


def test_a_long_module_is_named(tmp_path):
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "_modidx.py").write_text("x = 1\n" * 1000)
    assert oversized(tmp_path) == {"long.py": MAX_LINES + 1}


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
