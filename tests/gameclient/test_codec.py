"""The shared codec (gameclient/codec.py) against the protocol's own definition."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from gameclient import codec
from tests.support.protocol_schema import ROOT, check_client_frame

BUILT: list[dict[str, Any]] = [
    codec.join("ana"),
    codec.join("ana", "3q2-7wEAAAB1bS1hbmEtdG9rZW4"),
    codec.move(4),
    codec.move(4, 7),
    codec.chat("gg"),
    codec.rematch(),
    codec.bot(),
    codec.bot("easy"),
    codec.quickmatch("ana"),
    codec.sync(),
    codec.ping(123),
    codec.relay({"anything": ["at", "all"]}),
]


@pytest.mark.parametrize("message", BUILT, ids=lambda m: codec.encode(m))
def test_every_message_the_codec_builds_is_a_client_message_of_the_document(
    message: dict[str, Any],
) -> None:
    check_client_frame(json.loads(codec.encode(message)))


def test_decode_gives_the_frame_and_its_kind() -> None:
    frame = codec.decode('{"type":"pong","t":1.5}')
    assert frame == {"type": "pong", "t": 1.5}
    assert codec.kind(frame) == "pong"
    assert codec.kind(codec.decode(b'{"payload":[1]}')) is None


@pytest.mark.parametrize(
    "text",
    ["[1]", '"state"', "not json", '{"t":NaN}', '{"t":Infinity}', '{"t":1e999}', '{"t":[-1e400]}'],
)
def test_decode_refuses_what_is_not_one_json_object_of_finite_numbers(text: str) -> None:
    with pytest.raises(codec.ProtocolError):
        codec.decode(text)


def test_encode_refuses_numbers_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        codec.encode(codec.ping(float("inf")))


def test_the_newest_state_wins_and_the_later_one_on_a_tie() -> None:
    seven = {"type": "state", "version": 7, "spectators": 1}
    seven_again = {"type": "state", "version": 7, "spectators": 2}
    six = {"type": "state", "version": 6}
    assert codec.newer(seven, None)
    assert codec.newer(seven_again, seven)
    assert not codec.newer(six, seven)


def test_the_codec_needs_only_the_standard_library() -> None:
    """Locust's environment (requirements/loadtest.txt) has neither Django nor `websockets`."""
    probe = (
        "import sys, gameclient.codec; "
        "print(sorted(m for m in ('django', 'websockets', 'game', 'realtime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
