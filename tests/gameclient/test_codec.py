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


def state(version: int, presence_at: int, *, online: bool, spectators: int) -> dict[str, Any]:
    players = {"X": {"name": "ana", "online": online}, "O": {"name": "bo", "online": True}}
    return {
        "type": "state",
        "version": version,
        "board": [None] * 9,
        "players": players,
        "spectators": spectators,
        "presence_at": presence_at,
    }


def test_a_later_presence_count_wins_whatever_version_it_rode_with() -> None:
    # Replica A counted ana offline at t=200 with version 7; replica B's older count
    # (t=100, ana online) arrives later on the same version, then a move at version 8
    # still carrying the t=100 count.
    counted_late = state(7, 200, online=False, spectators=3)
    counted_early = state(7, 100, online=True, spectators=5)
    kept = codec.merged(counted_late, None)
    kept = codec.merged(counted_early, kept)
    assert kept["players"]["X"]["online"] is False
    assert (kept["spectators"], kept["presence_at"]) == (3, 200)
    moved = {**state(8, 100, online=True, spectators=5), "board": ["X"] + [None] * 8}
    kept = codec.merged(moved, kept)
    assert kept["version"] == 8
    assert kept["board"][0] == "X"
    assert kept["players"]["X"]["online"] is False
    assert kept["spectators"] == 3
    # A newer count wins again.
    kept = codec.merged(state(8, 300, online=True, spectators=1), kept)
    assert (kept["players"]["X"]["online"], kept["spectators"]) == (True, 1)


def test_presence_of_a_seat_that_changed_hands_is_not_carried_over() -> None:
    kept = state(7, 200, online=False, spectators=0)
    newcomer = state(8, 100, online=True, spectators=0)
    newcomer["players"]["X"] = {"name": "cy", "online": True}
    assert codec.merged(newcomer, kept)["players"]["X"] == {"name": "cy", "online": True}


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
