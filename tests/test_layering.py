"""The package's layering contract, and the map of it in docs/architecture.md.

The packages of ``resnetlab`` sit in layers, and a module imports only from its own package or from
a package in a lower layer, lazy (in-function) imports included:

1. ``resnetlab`` itself (the public names, ``__init__``) and ``__main__``
2. ``cli``: the command line
3. ``experiments``: the reproductions and studies, and their reports
4. ``evaluation`` and ``weights``: using a trained checkpoint; naming, loading and exporting weights
5. ``engine``: training (and the evaluation loop it runs)
6. ``analysis``, ``data``, ``recipes``, ``reporting``: measurements over (net, batches), datasets,
   the paper's recipes, figures and report pages
7. ``download`` and ``models``: verified downloads, the networks
8. ``atomic`` and ``errors``: whole files and one-line user errors

Packages in one layer do not import each other. The one exception: ``from resnetlab import
__version__`` is allowed anywhere (a constant, not code). A cycle hidden behind an import inside a
function still couples the modules both ways and breaks as soon as someone moves the import to the
top; so every ``import resnetlab...`` anywhere in a module counts, and there is no cycle either.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "resnetlab"

# top to bottom; "" is the package itself (its __init__), "__main__" its `python -m` entry
LAYERS = [
    {"", "__main__"},
    {"cli"},
    {"experiments"},
    {"evaluation", "weights"},
    {"engine"},
    {"analysis", "data", "recipes", "reporting"},
    {"download", "models"},
    {"atomic", "errors"},
]
VERSION_ONLY = {"__version__"}  # what any module may import from the package itself


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package`` (its __init__ as the package)."""
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports(package: Path) -> list[tuple[str, str, int, set[str]]]:
    """(module, the package's module it imports, line, names taken) for every import of the package
    anywhere in every module's body."""
    modules = module_names(package)
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(a.name, set()) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
                targets = [
                    (f"{node.module}.{a.name}", set())
                    if f"{node.module}.{a.name}" in modules
                    else (node.module, {a.name})
                    for a in node.names
                ]
            else:
                continue
            found += [(name, t, node.lineno, names) for t, names in targets if t in modules and t != name]
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {m: set() for m in module_names(package)}
    for module, target, _, _ in imports(package):
        graph[module].add(target)
    return graph


def part(module: str) -> str:
    """The top-level part of the package a module belongs to: "engine" for pkg.engine.trainer, ""
    for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations(package: Path, layers: list[set[str]]) -> list[str]:
    """Every import against ``layers`` (top first), as "module:line imports target (...)"; a part of
    the package that no layer names is one too."""
    layer = {name: i for i, names in enumerate(layers) for name in names}
    found = [
        f"{package.name}.{p.name.removesuffix('.py')}: in no layer"
        for p in package.iterdir()
        if p.name != "__init__.py"
        and (p.suffix == ".py" or (p / "__init__.py").exists())
        and p.name.removesuffix(".py") not in layer
    ]
    for module, target, line, names in imports(package):
        here, there = part(module), part(target)
        if here == there or (there == "" and names and names <= VERSION_ONLY):
            continue
        if here in layer and there in layer and layer[there] <= layer[here]:
            above = "a higher layer" if layer[there] < layer[here] else "its own layer"
            found.append(f"{module}:{line} imports {target} ({there or 'the package'}, {above})")
    return sorted(found)


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


def test_resnetlab_keeps_its_layers() -> None:
    assert layering_violations(SRC, LAYERS) == []


def test_the_check_sees_an_import_against_the_layers(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    for sub in ("low", "mid", "side", "top"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("__version__ = '1'\nfrom pkg.top import cmd\n")
    (pkg / "top" / "cmd.py").write_text("from pkg.mid import work\n")  # down: allowed
    (pkg / "mid" / "work.py").write_text("from pkg import __version__\nimport pkg.low.base\n")  # allowed
    (pkg / "low" / "base.py").write_text("def f():\n    from pkg.mid.work import g\n")  # up, lazily
    (pkg / "side" / "peer.py").write_text("from pkg.mid import work\n")  # its own layer
    (pkg / "low" / "loose.py").write_text("from pkg import cmd_name\n")  # more than the version
    (pkg / "stray.py").write_text("")
    layers = [{""}, {"top"}, {"mid", "side"}, {"low"}]
    assert layering_violations(pkg, layers) == [
        "pkg.low.base:2 imports pkg.mid.work (mid, a higher layer)",
        "pkg.low.loose:1 imports pkg (the package, a higher layer)",
        "pkg.side.peer:1 imports pkg.mid.work (mid, its own layer)",
        "pkg.stray: in no layer",
    ]


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
        # a module that declares an experiment is listed by `resnetlab reproduce --help` already: adding
        # an experiment is its module and its test, nothing else
        modules = {
            m.name
            for m in package.glob("*.py")
            if m.name != "__init__.py" and "\nEXPERIMENT = Experiment(" not in m.read_text()
        }
        assert modules <= words, (
            f"{package.name}/: docs/architecture.md does not name {sorted(modules - words)}"
        )
