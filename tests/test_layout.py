"""The packages depend one way, as README's map draws them: the socket side on the domain,
never the reverse; the channel layer, the job runtime and the protocol client on neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("game", "realtime", "layer", "workers", "deploy", "gameclient", "devtools")

# package -> the packages of this repository it must not import
FORBIDDEN = {
    "game": {"realtime", "layer", "deploy", "devtools", "gameclient"},
    "layer": {"game", "realtime", "workers", "deploy"},
    "workers": {"game", "realtime", "layer", "deploy"},
    "gameclient": {"game", "realtime", "layer", "workers", "deploy", "devtools", "django"},
    "devtools": {"game", "realtime", "layer", "workers", "deploy", "django"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level names each module of `package` imports (function-level imports too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_the_layering_allows(package: str) -> None:
    wrong = {
        module: sorted(names & FORBIDDEN[package])
        for module, names in imported_packages(package).items()
        if names & FORBIDDEN[package]
    }
    assert wrong == {}, f"{package}/ imports across the layering: {wrong}"


def test_every_package_of_the_map_exists() -> None:
    assert all((ROOT / package / "__init__.py").exists() for package in PACKAGES)
