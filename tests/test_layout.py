"""docs/layout.md is true: every module of the package lies in a wing, no arrow runs against the table, and no
circle runs at import time or lazily, between modules or between wings' packages (scripts/house.py, ast only)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("house", ROOT / "scripts" / "house.py")
house = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(house)
PKG = "trt_minitron"


def test_every_module_has_a_wing_and_no_arrow_runs_against_the_layout():
    mods, edges = house.read_package(ROOT / PKG)
    wings = house.parse_layout(ROOT / "docs" / "layout.md", PKG)
    assert len(wings) >= 10 and house.homeless(mods, PKG, wings) == []
    assert house.upward_arrows(mods, edges, PKG, wings) == []


def test_no_import_circles():
    mods, edges = house.read_package(ROOT / PKG)
    assert house.runtime_circles(set(mods), edges) == []
    assert house.runtime_circles(set(mods), edges, key=lambda m: house.unit(m, PKG)) == []


def test_the_tool_sees_an_upward_arrow(tmp_path):
    """The checks above can fail: a planted import from a lower wing to a higher one is found."""
    pkg = tmp_path / PKG
    for rel, text in {"__init__.py": "", "errors.py": "from .export import run\n", "export/__init__.py": "",
                      "export/run.py": "from .. import errors\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    mods, edges = house.read_package(pkg)
    wings = house.parse_layout(ROOT / "docs" / "layout.md", PKG)
    assert [(a, b) for a, _, b, _, _ in house.upward_arrows(mods, edges, PKG, wings)] == [
        ("trt_minitron.errors", "trt_minitron.export.run")]
    assert house.runtime_circles(set(mods), edges) == [["trt_minitron.errors", "trt_minitron.export.run"]]


def test_every_folder_of_the_package_is_a_package():
    """A folder without __init__.py still imports (a namespace package) but is left out of the wheel."""
    folders = {p.parent for p in (ROOT / PKG).rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []
