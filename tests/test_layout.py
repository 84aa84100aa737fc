"""The packages depend one way, as README's map draws them: the socket side on the domain,
never the reverse; the channel layer, the job runtime and the protocol client on neither.
No module imports itself back through others, and none grows past 400 lines."""

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


MODULE_PACKAGES = (*PACKAGES, "config", "bench", "loadtest")


def module_graph() -> dict[str, set[str]]:
    """Module -> the repository modules it imports (anywhere in the file)."""
    paths = {}
    for package in MODULE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                paths[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                modules = {f"{base}.{alias.name}" for alias in node.names} & paths.keys()
                found |= modules if len(modules) == len(node.names) else {base, *modules}
        graph[name] = (found & paths.keys()) - {name}
    return graph


def test_no_module_imports_itself_back() -> None:
    graph = module_graph()

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module == target:
                return True
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        return False

    cycles = sorted(module for module in graph if reaches(module, module))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_no_module_is_longer_than_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in MODULE_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}, long
