"""The shape of the package, checked: data flows one way, no circles, no privates across modules.

Layers (lower never imports higher): utils < models, data < eval < train, deploy < analysis < cli < the
package root. Deployment, serving and evaluation never import training. Lazy (function-level) imports count.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "resnetlab"
RANK = {"utils": 0, "models": 1, "data": 1, "eval": 2, "train": 3, "deploy": 3, "explain": 3, "analysis": 4, "cli": 5,
        "configs": 0, "compress": 4, "serve": 4}
FORBIDDEN = {("eval", "train"), ("deploy", "train"), ("train", "deploy"), ("explain", "train"), ("explain", "deploy"),
             ("data", "models"), ("serve", "train"), ("serve", "compress"), ("serve", "analysis"),
             ("models", "data")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module imported, names imported from it, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
    return [(m, names, line) for m, names, line in out if m.startswith("resnetlab")]


FILES = sorted(SRC.rglob("*.py"))


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in FILES:
        me = _layer(_module_name(path))
        if me is None:
            continue
        for mod, names, line in _imports(path):
            targets = [mod] + [f"{mod}.{n}" for n in names]
            for target in targets:
                other = _layer(target)
                if other is None or other == me:
                    continue
                if RANK[other] > RANK[me] or (me, other) in FORBIDDEN:
                    bad.append(f"{path.relative_to(SRC)}:{line} ({me}) imports {target} ({other})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycles_between_modules():
    modules = {_module_name(p): p for p in FILES}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        for mod, names, _ in _imports(path):
            for target in [f"{mod}.{n}" for n in names] + [mod]:
                if target in modules and target != m:
                    graph[m].add(target)
                    break
    # a package's __init__ re-exporting its own modules is not a cycle of logic: drop package -> child edges
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:10])


def test_no_private_names_imported_across_modules():
    bad = []
    for path in FILES:
        for mod, names, line in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {private} from {mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("old", ["inference", "evaluate", "stats", "weights", "bench", "cli_deploy"])
def test_modules_are_named_for_what_they_are(old):
    """Checkpoint loading is eval.loading, metrics eval.metrics, stats/weights live with the models, bench
    with deployment: no top-level module keeps an old, misleading name."""
    assert not (SRC / f"{old}.py").exists()
