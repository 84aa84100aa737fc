"""Static files storage for production (STORAGES in config/settings/base.py)."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class ManifestStaticFilesWithModules(CompressedManifestStaticFilesStorage):  # type: ignore[misc]
    """whitenoise's compressed manifest storage, also rewriting ES module imports.

    The page is native ES modules (game/static/game/js/): collectstatic rewrites their
    relative imports (`from "./wire.js";`) to the hashed names, so every module is cached
    for good and a deploy never mixes old and new ones. tests/game/test_static_modules.py
    checks it.
    """

    support_js_module_import_aggregation = True
