"""docs/asyncapi.yaml and docs/protocol.md agree with each other and with the server.

The AsyncAPI document must be valid AsyncAPI 3.0 (the official JSON Schema, installed
by `make test` from requirements/asyncapi/ with npm), every JSON example in
docs/protocol.md must be the message its schema describes, and every frame the
server sends in the consumer suite is checked by tests/support/ws.py's strict_json.
"""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft7Validator

from tests.support.protocol_schema import (
    ROOT,
    check_client_frame,
    check_server_frame,
    client_keys,
    document,
    server_keys,
)

SPECS = ROOT / "requirements" / "asyncapi" / "node_modules" / "@asyncapi" / "specs" / "schemas"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    schema_path = SPECS / "3.0.0-without-$id.json"
    assert schema_path.exists(), (
        f"{schema_path} is missing: install it with `npm ci --prefix requirements/asyncapi`"
        " (`make test` does)"
    )
    schema = json.loads(schema_path.read_text())
    errors = list(Draft7Validator(schema).iter_errors(document()))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]


def _json_blocks(text: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)


def _inline_objects(text: str) -> list[str]:
    """Inline `{...}` examples that are complete JSON (templates with … or <...> are not)."""
    found = []
    for candidate in re.findall(r"`(\{[^`]*\})`", text):
        try:
            json.loads(candidate)
        except ValueError:
            continue
        found.append(candidate)
    return found


def test_every_json_example_in_protocol_md_is_the_message_it_shows() -> None:
    text = PROTOCOL_MD.read_text()
    checked: dict[str, set[str]] = {"server": set(), "client": set()}
    for block in _json_blocks(text):
        frame = json.loads(block)
        if "leaderboard" in frame:  # the HTTP API's answer, not a socket frame
            continue
        checked["server"].add(check_server_frame(frame))
    client_section = text[text.index("## Client → server") : text.index("## Presence")]
    for inline in _inline_objects(client_section):
        checked["client"].add(check_client_frame(json.loads(inline)))
    # Every message the document types has an example that passed.
    assert checked["server"] == set(server_keys().values())
    assert checked["client"] >= set(client_keys().values()) - {"relay"}


def test_the_relay_example_matches_too() -> None:
    assert check_client_frame({"data": {"any": ["value"]}}) == "relay"
    assert check_server_frame({"payload": {"any": ["value"]}}) == "payload"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "welcome", "room": "abc", "server": "web-1", "protocol": 1, "extra": True},
        {"type": "error", "code": "no_such_code", "message": "?"},
        {"type": "joined", "mark": "Z", "token": "t"},
        {"type": "shout"},
    ],
)
def test_a_frame_the_document_does_not_describe_fails(frame: dict[str, object]) -> None:
    with pytest.raises(AssertionError):
        check_server_frame(frame)


def test_the_readme_points_at_the_protocol_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "../shared/PROTOCOL.md" not in readme
    assert "docs/protocol.md" in readme
    assert (ROOT / "docs" / "asyncapi.yaml").exists()
