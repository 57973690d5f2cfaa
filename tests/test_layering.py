"""The package's import graph has no cycle, lazy (in-function) imports included.

A cycle hidden behind an import inside a function still couples the modules both ways and breaks as
soon as someone moves the import to the top; so every ``import resnetlab...`` anywhere in a module
counts as an edge here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "resnetlab"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package`` (its __init__ as the package)."""
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body."""
    modules = module_names(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
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


def test_resnetlab_has_no_import_cycle() -> None:
    graph = import_graph(SRC)
    assert len(graph) > 50
    assert graph["resnetlab.weights.hub"] >= {"resnetlab.models", "resnetlab.weights.loading"}
    assert cycles(graph) == []


def test_the_check_sees_cycles_through_lazy_and_from_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n\ndef g():\n    pass\n")
    (pkg / "d.py").write_text("from pkg import a\n")  # points into the cycle, not part of it
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


ARCHITECTURE = SRC.parents[1] / "docs" / "architecture.md"


def documented_layout() -> list[str]:
    """The lines of the code block under the "## Layout" heading of docs/architecture.md."""
    block = ARCHITECTURE.read_text().split("\n## Layout\n", 1)[1].split("```\n", 2)[1]
    return block.splitlines()


def test_the_documented_layout_names_every_module_and_nothing_else() -> None:
    lines = documented_layout()
    listed = {line.split()[0] for line in lines if line.startswith("  ") and not line.startswith("   ")}
    entries = {
        p.name + ("/" if p.is_dir() else "")
        for p in SRC.iterdir()
        if p.name not in ("__init__.py", "__main__.py", "__pycache__")
    }
    assert listed == entries
    words = set(
        " ".join(lines).replace(",", " ").replace("(", " ").replace(")", " ").replace(";", " ").split()
    )
    for package in (p for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        modules = {m.name for m in package.glob("*.py") if m.name != "__init__.py"}
        assert modules <= words, (
            f"{package.name}/: docs/architecture.md does not name {sorted(modules - words)}"
        )
