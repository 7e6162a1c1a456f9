"""Code-health numbers of a checkout: lines per function, the import graph and its cycles.

``python -m benchmarks.code_metrics [ROOT] [--json]`` prints the median and the 10 longest
functions (lines from ``def`` to the end of the body, nested functions counted in their parent
too), every import between the project's modules (function-level imports included: they hide
cycles, they do not remove them) and the cycles between packages (``unet_edge.runtime``,
``unet_edge.trt``, ``calibration``, ``benchmarks``, ...). ``tests/test_architecture.py`` keeps the
layer order written in ``ARCHITECTURE.md``; this script is for the before/after numbers.
"""
from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
from pathlib import Path

#: Top-level folders and files whose Python modules are measured.
SOURCES = ("unet_edge", "calibration", "benchmarks", "cli.py")


def python_files(root: Path) -> list[Path]:
    """The project's modules under ``root`` (no tests, no virtualenv)."""
    files: list[Path] = []
    for name in SOURCES:
        p = root / name
        files += [p] if p.is_file() else sorted(p.rglob("*.py"))
    # only importable modules: scripts kept beside a report (benchmarks/reports/<name>/) are not part of the code
    return [f for f in files if all(part.isidentifier() for part in f.relative_to(root).with_suffix("").parts)]


def module_name(root: Path, path: Path) -> str:
    """Dotted module name of ``path`` relative to ``root`` (``unet_edge/runtime/stream.py`` -> ``unet_edge.runtime.stream``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def function_lengths(root: Path) -> list[tuple[int, str]]:
    """(lines, ``module:qualname``) of every function and method, longest first."""
    out = []
    for path in python_files(root):
        tree = ast.parse(path.read_text(), str(path))
        mod = module_name(root, path)

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    out.append((child.end_lineno - child.lineno + 1, f"{mod}:{name}"))
                    visit(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

        visit(tree, "")
    return sorted(out, reverse=True)


def imports(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file, relative imports resolved)."""
    files = python_files(root)
    known = {module_name(root, p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        mod = module_name(root, path)
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # `from pkg import module` needs pkg/__init__ too, but that is pkg's own business: count the module
                names = [n for n in subs if n in known] or [base]
                names += [base] if any(n not in known for n in subs) and base not in names else []
            for n in names:
                while n and n not in known:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    deps.add(n)
        graph[mod] = deps
    return graph


def package_of(module: str) -> str:
    """The node a module belongs to for the cycle count: a subpackage of ``unet_edge`` is one node
    (``unet_edge.runtime.x`` -> ``unet_edge.runtime``), a top-level module of ``unet_edge`` is its own
    (``unet_edge.train``), ``calibration.x`` -> ``calibration``, ``benchmarks.x`` -> ``benchmarks``."""
    parts = module.split(".")
    if parts[0] == "unet_edge" and len(parts) >= 2:
        return ".".join(parts[:2])
    return parts[0]


def top_level_of(module: str) -> str:
    """``unet_edge``, ``calibration``, ``benchmarks`` or ``cli``: the project card's top-level parts."""
    return module.split(".")[0]


def package_cycles(graph: dict[str, set[str]], node=package_of) -> list[list[str]]:
    """Strongly connected components (more than one node) of the import graph with modules grouped by
    ``node`` (:func:`package_of` or :func:`top_level_of`), found with Tarjan's algorithm."""
    pg: dict[str, set[str]] = {}
    for m, deps in graph.items():
        a = node(m)
        pg.setdefault(a, set())
        for d in deps:
            if node(d) != a:
                pg[a].add(node(d))
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in pg.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(pg):
        if v not in index:
            strong(v)
    return comps


def function_level_imports(root: Path) -> int:
    """Import statements inside a function body (each one hides a dependency from the module's top)."""
    n = 0
    for path in python_files(root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n += sum(isinstance(c, (ast.Import, ast.ImportFrom)) for c in ast.walk(node))
    return n


def measure(root: Path) -> dict:
    """All numbers of :func:`main` as a dict."""
    lengths = function_lengths(root)
    graph = imports(root)
    return {
        "functions": len(lengths),
        "median_lines": statistics.median(n for n, _ in lengths),
        "longest": [{"lines": n, "function": f} for n, f in lengths[:10]],
        "package_cycles": package_cycles(graph),
        "top_level_cycles": package_cycles(graph, top_level_of),
        "function_level_imports": function_level_imports(root),
        "module_lines": {module_name(root, p): len(p.read_text().splitlines()) for p in python_files(root)},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=".", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    m = measure(args.root.resolve())
    if args.json:
        print(json.dumps(m, indent=2))
        return
    print(f"{m['functions']} functions, median {m['median_lines']} lines; function-level imports: {m['function_level_imports']}")
    for row in m["longest"]:
        print(f"  {row['lines']:4d}  {row['function']}")
    print(f"package cycles: {len(m['package_cycles'])}")
    for c in m["package_cycles"]:
        print("  " + " <-> ".join(c))
    print(f"top-level cycles (unet_edge / calibration / benchmarks / cli): {len(m['top_level_cycles'])}")
    for c in m["top_level_cycles"]:
        print("  " + " <-> ".join(c))
    big = sorted(m["module_lines"].items(), key=lambda kv: -kv[1])[:5]
    print("largest modules: " + ", ".join(f"{k} {v}" for k, v in big))


if __name__ == "__main__":
    main()
