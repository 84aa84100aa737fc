"""The page's ES modules (game/static/game/js/) as production serves them, without services.

collectstatic with the production storage (STORAGES in config/settings/base.py, kept by
config/settings/production.py) must rewrite every relative module import to the hashed
file it names, and the page must load the hashed entry module from a script file
(no inline scripts, for CSP).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.management import call_command
from django.template.loader import render_to_string
from pytest_django.fixtures import Settings

from config.settings import base

JS = "game/js"  # the modules' folder under STATIC_ROOT
JS_DIR = Path(base.BASE_DIR) / "game" / "static" / JS
ENTRY = f"{JS}/main.js"
# `import … from "…"`, `export … from "…"`, `import "…"`, `import("…")`.
SPECIFIER_RE = re.compile(r"""\bfrom\s*["']([^"']+)["']|\bimport\s*\(?\s*["']([^"']+)["']""")
SCRIPT_RE = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S)


def specifiers(text: str) -> list[str]:
    return [a or b for a, b in SPECIFIER_RE.findall(text)]


def stored_name(name: str) -> str:
    """`name`'s hashed name, from the manifest of the storage collectstatic used."""
    storage = staticfiles_storage
    assert isinstance(storage, ManifestFilesMixin), storage
    return storage.stored_name(name)


def resolve(module: str, specifier: str) -> str:
    """The static path `specifier` names, imported from the static path `module`."""
    assert specifier.startswith("./"), f"{module}: import {specifier!r} is not ./relative"
    return posixpath.normpath(posixpath.join(posixpath.dirname(module), specifier))


@pytest.fixture
def collected(tmp_path: Path, settings: Settings) -> Path:
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = base.STORAGES
    call_command("collectstatic", interactive=False, verbosity=0)
    return tmp_path


def test_every_module_is_reachable_from_the_entry() -> None:
    sources = {f"{JS}/{path.name}" for path in JS_DIR.glob("*.js")}
    seen, todo = set(), [ENTRY]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        text = (JS_DIR / posixpath.basename(module)).read_text(encoding="utf-8")
        for specifier in specifiers(text):
            target = resolve(module, specifier)
            assert target in sources, f"{module} imports {specifier}, which does not exist"
            todo.append(target)
    assert seen == sources, f"modules nothing imports: {sorted(sources - seen)}"


def test_collectstatic_rewrites_module_imports_to_the_hashed_files(collected: Path) -> None:
    for path in sorted(JS_DIR.glob("*.js")):
        module = f"{JS}/{path.name}"
        stored = stored_name(module)
        assert stored != module, f"{module} was not hashed"
        wanted = [
            stored_name(resolve(module, specifier))
            for specifier in specifiers(path.read_text(encoding="utf-8"))
        ]
        got = [
            resolve(stored, specifier)
            for specifier in specifiers((collected / stored).read_text(encoding="utf-8"))
        ]
        assert got == wanted, module
        for name in got:
            assert (collected / name).is_file(), f"{stored} imports {name}, which is missing"


def test_the_page_loads_the_hashed_entry_module_from_a_file(collected: Path) -> None:
    html = render_to_string("game/index.html")
    scripts = SCRIPT_RE.findall(html)
    assert scripts, "the page has no script"
    for _, body in scripts:
        assert not body.strip(), f"inline script: {body[:80]!r}"
    entry = f"{base.STATIC_URL}{stored_name(ENTRY)}"
    assert [attributes.split() for attributes, _ in scripts] == [
        ['type="module"', f'src="{entry}"']
    ]
    assert (collected / entry.removeprefix(base.STATIC_URL)).is_file()
