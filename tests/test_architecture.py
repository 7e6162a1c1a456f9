"""The layer order of ARCHITECTURE.md holds: every import points down (or within a layer, without
cycles), at module and at package level; library code never imports ``benchmarks`` or ``cli``.

Function-level imports count like top-level ones: a lazy import hides a dependency, it does not
remove it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.code_metrics import imports, package_cycles, package_of, python_files, module_name

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> dict[str, int]:
    """module -> layer from ARCHITECTURE.md's table rows ``| L<n> | `module` | job | may import |``."""
    table = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        m = re.match(r"\|\s*L(\d+)\s*\|\s*`([\w.]+)`\s*\|", line)
        if m:
            table[m.group(2)] = int(m.group(1))
    return table


LAYERS = _layers()
GRAPH = imports(ROOT)


def test_every_module_has_a_layer():
    modules = {module_name(ROOT, p) for p in python_files(ROOT)}
    missing = sorted(modules - set(LAYERS))
    assert not missing, f"modules without a line in ARCHITECTURE.md: {missing}"
    gone = sorted(set(LAYERS) - modules)
    assert not gone, f"ARCHITECTURE.md lists modules that do not exist: {gone}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    up = [f"{d} (L{LAYERS.get(d)})" for d in sorted(GRAPH[module]) if LAYERS.get(d, 99) > LAYERS.get(module, -1)]
    assert not up, f"{module} (L{LAYERS.get(module)}) imports a higher layer: {up}"


def test_no_module_cycles():
    assert package_cycles(GRAPH, node=lambda m: m) == []


def test_no_package_cycles():
    assert package_cycles(GRAPH, node=package_of) == []


def test_library_never_imports_benchmarks_or_cli():
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ("benchmarks", "cli"))
           for m, deps in GRAPH.items() if m.split(".")[0] in ("unet_edge", "calibration")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_calibration_depends_on_the_core_and_data_only():
    core = {m for m, layer in LAYERS.items() if layer <= 1}
    bad = {m: sorted(d for d in deps if not d.startswith("calibration") and d not in core)
           for m, deps in GRAPH.items() if m.startswith("calibration")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_check_catches_an_upward_import(tmp_path):
    """The parser sees function-level and relative imports (else the tests above could pass on anything)."""
    pkg = tmp_path / "unet_edge"
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from .runtime import stream\n")
    (pkg / "runtime" / "__init__.py").write_text("")
    (pkg / "runtime" / "stream.py").write_text("from ..errors import f\n")
    g = imports(tmp_path)
    assert g["unet_edge.errors"] == {"unet_edge.runtime.stream"}
    assert package_cycles(g, node=package_of) == [["unet_edge.errors", "unet_edge.runtime"]]
