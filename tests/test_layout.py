"""The shape of the package itself: public API, deprecated paths, no import cycles, size limits."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import geoseg
from geoseg._compat import MOVED

PACKAGE = Path(geoseg.__file__).parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def test_public_api_resolves_every_name():
    for name in geoseg.__all__:
        assert getattr(geoseg, name) is not None, name
    assert issubclass(geoseg.GeosegError, Exception)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        geoseg.nope  # noqa: B018


@pytest.mark.slow
def test_import_geoseg_is_light():
    code = "import sys, geoseg; print(sorted(m for m in ('torch', 'dask', 'geopandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_import_paths_forward_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught)
    new = importlib.import_module(MOVED[old])
    public = [n for n in dir(new) if not n.startswith("_")]
    assert public, MOVED[old]
    assert all(getattr(module, n) is getattr(new, n) for n in public)


def test_no_import_cycles():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (lint extra)")
    graph = grimp.build_graph("geoseg")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}: {graph.find_shortest_chain(imported, module)}")
    # a package's __init__ re-exporting its own api module is not a cycle of responsibilities
    cycles = [c for c in cycles if not _is_reexport(c)]
    assert not cycles, "\n".join(cycles)


def _is_reexport(cycle: str) -> bool:
    a, b = cycle.split(":")[0].split(" <-> ")
    return a.startswith(b + ".") or b.startswith(a + ".")


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_no_module_is_too_long():
    long = {str(p.relative_to(PACKAGE)): n for p in _sources() if (n := len(p.read_text().splitlines()))
            > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long_without_a_reason():
    """A function whose code (docstring aside) is over the limit needs a ``# long: <why>`` comment on the
    line above its ``def``."""
    offenders = []
    for path in _sources():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
                length = (node.end_lineno or node.lineno) - body[0].lineno + 1  # the code, not the docstring
                if length > MAX_FUNCTION_LINES and not lines[first - 2].strip().startswith("# long:"):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not offenders, "\n".join(offenders)


def test_names_of_the_old_flat_predict_and_change_modules_still_resolve():
    import geoseg.change
    import geoseg.predict

    with pytest.warns(DeprecationWarning, match="geoseg.change.parse_min_area is deprecated"):
        assert geoseg.change.parse_min_area is importlib.import_module("geoseg.change.api").parse_min_area
    with pytest.warns(DeprecationWarning, match="geoseg.predict.SIDECARS"):
        assert "report.html" in geoseg.predict.SIDECARS
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        geoseg.change.nope  # noqa: B018
