"""The protocol's JSON Schemas (docs/asyncapi.yaml), for checking frames in tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from gameclient.codec import Frame

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"


@cache
def document() -> dict[str, Any]:
    loaded = yaml.safe_load(ASYNCAPI.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _message_keys(operation: str) -> dict[str, str]:
    """The operation's messages: the frame's `type` (or its only field, for the relay's
    type-less frames) -> the component message's key."""
    doc = document()
    keys: dict[str, str] = {}
    for ref in doc["operations"][operation]["messages"]:
        channel_key = ref["$ref"].rsplit("/", 1)[-1]
        key = doc["channels"]["room"]["messages"][channel_key]["$ref"].rsplit("/", 1)[-1]
        payload = doc["components"]["messages"][key]["payload"]
        typed = payload["properties"].get("type", {}).get("const")
        keys[typed if typed is not None else payload["required"][0]] = key
    return keys


@cache
def server_keys() -> dict[str, str]:
    return _message_keys("sendToClient")


@cache
def client_keys() -> dict[str, str]:
    return _message_keys("receiveFromClient")


@cache
def validator(key: str) -> Draft7Validator:
    """The validator of one component message's payload (refs resolve in the document)."""
    components = document()["components"]
    return Draft7Validator(
        {"$ref": f"#/components/messages/{key}/payload", "components": components}
    )


def _key(frame: Frame, keys: dict[str, str]) -> str:
    kind = frame.get("type")
    if kind is None:  # the relay: {"payload": ...} from the server, {"data": ...} to it
        kind = next(iter(frame), None)
    key = keys.get(str(kind))
    assert key is not None, f"no message of type {kind!r} in docs/asyncapi.yaml: {frame}"
    return key


def check_server_frame(frame: Frame) -> str:
    """Fail unless `frame` is a documented server message; returns its message key."""
    key = _key(frame, server_keys())
    errors = sorted(validator(key).iter_errors(frame), key=lambda e: list(e.path))
    assert not errors, (
        f"server frame breaks docs/asyncapi.yaml's `{key}`: {errors[0].message}"
        f" at {list(errors[0].path)}: {frame}"
    )
    return key


def check_client_frame(frame: Frame) -> str:
    """Fail unless `frame` is a documented client message; returns its message key."""
    key = _key(frame, client_keys())
    errors = list(validator(key).iter_errors(frame))
    assert not errors, f"client frame breaks `{key}`: {errors[0].message}: {frame}"
    return key
