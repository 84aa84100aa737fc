"""HTTP from the tests: JSON documents of a replica (`/api/...`, `/readyz`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.support.timing import budget

DEFAULT_TIMEOUT = budget(5.0)


def get_json(url: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, Any]:
    """GET a JSON document (blocking: call it through asyncio.to_thread)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read() or b"null")
