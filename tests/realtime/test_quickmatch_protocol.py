"""Quick match on the wire (docs/protocol.md, "Quick match"): `quickmatch` through the full
ASGI stack (`config.asgi.application`), every server frame checked against
docs/asyncapi.yaml by tests/support/ws.py.

What is proven: a bad name gets `bad_message` and the socket stays open and out of the
line; `quickmatch` sent twice from one socket keeps one place in line; closing the socket
leaves the line (a later pair does not pair it); two sockets get `matching` then
`matched`, and the tokens take the reserved seats.

The pairing runs as the `match.pair` job (embedded mode: in this process); every check
that depends on it waits for the `matched` frames, never for a fixed time. Runs on
SQLite and on PostgreSQL (DATABASE_URL); the consumer reaches the database from a worker
thread, hence transactional tests.
"""

from __future__ import annotations

import pytest
from django.db.models import Q

from game.models import MatchTicket, Room
from gameclient.codec import Frame
from tests.support.timing import budget
from tests.support.ws import WAIT, Client, Sockets

pytestmark = [
    pytest.mark.both_databases,
    pytest.mark.django_db(transaction=True, available_apps=["game", "django.contrib.auth"]),
]

LOBBY = "lobby"  # the room the page asks for quick match on
# An upper bound for the pairing job (a thread hop or two); no test waits this long
# unless the frame never comes.
MATCH_WITHIN = budget(5.0)
QUICK_MATCH_FRAMES = ("matching", "matched", "error")


async def next_quick_match_frame(client: Client, within: float = WAIT) -> Frame:
    """The next `matching`, `matched` or `error` (room states may come in between)."""
    return await client.recv_until(lambda frame: frame.get("type") in QUICK_MATCH_FRAMES, within)


async def quickmatch(client: Client, name: object) -> int:
    """Ask for quick match; the reply must be `matching` (nothing before it); its ticket."""
    await client.send({"type": "quickmatch", "name": name})
    frame = await next_quick_match_frame(client)
    assert frame["type"] == "matching", frame
    assert set(frame) == {"type", "ticket"}
    ticket = frame["ticket"]
    assert isinstance(ticket, int)
    return ticket


async def matched(client: Client) -> Frame:
    """The `matched` this socket is told; nothing else of quick match comes first."""
    frame = await next_quick_match_frame(client, within=MATCH_WITHIN)
    assert frame["type"] == "matched", frame
    return frame


async def tickets() -> list[tuple[str, str | None, str]]:
    """The quick-match line as stored, in arrival order: (name, room or None, mark)."""
    rows = MatchTicket.objects.order_by("id").values_list("name", "room_id", "mark")
    return [(name, room, mark) async for name, room, mark in rows]


async def alive(client: Client) -> None:
    """The socket still answers."""
    await client.send({"type": "ping", "t": "alive"})
    assert await client.recv_type("pong") == {"type": "pong", "t": "alive"}


# --- bad names ------------------------------------------------------------------------


async def test_quickmatch_with_a_bad_name_gets_bad_message_and_the_socket_stays_open(
    ws: Sockets, roomy_limits: None
) -> None:
    client = await ws.open(LOBBY)
    bad: dict[str, Frame] = {
        "empty": {"type": "quickmatch", "name": ""},
        "33 characters": {"type": "quickmatch", "name": "x" * 33},
        "33 emoji": {"type": "quickmatch", "name": "\U0001f642" * 33},
        "tab only": {"type": "quickmatch", "name": "\t"},
        "newline only": {"type": "quickmatch", "name": "\n\n"},
        "spaces around a tab": {"type": "quickmatch", "name": " \t "},
        "no-break space only": {"type": "quickmatch", "name": "\u00a0"},
        "ideographic spaces only": {"type": "quickmatch", "name": "\u3000\u3000"},
        "line separator only": {"type": "quickmatch", "name": "\u2028"},
        "ASCII spaces only": {"type": "quickmatch", "name": "   "},
        "Hangul filler only": {"type": "quickmatch", "name": "\u3164"},
        "right-to-left override": {"type": "quickmatch", "name": "ana\u202e"},
        "number": {"type": "quickmatch", "name": 5},
        "true": {"type": "quickmatch", "name": True},
        "null": {"type": "quickmatch", "name": None},
        "list": {"type": "quickmatch", "name": ["ana"]},
        "object": {"type": "quickmatch", "name": {"name": "ana"}},
        "missing": {"type": "quickmatch"},
    }

    got = {}
    for label, message in bad.items():
        await client.send(message)
        frame = await next_quick_match_frame(client)
        assert frame["type"] == "error", (label, frame)
        assert isinstance(frame["message"], str)
        assert frame["message"]
        got[label] = frame["code"]
        await alive(client)

    assert got == dict.fromkeys(bad, "bad_message")
    assert await tickets() == []  # nobody joined the line
    # The same socket can still ask with a good name: 32 characters is the limit.
    await quickmatch(client, "x" * 32)
    assert await tickets() == [("x" * 32, None, "")]


# --- one place in line per socket -------------------------------------------------------


async def test_quickmatch_sent_twice_from_one_socket_keeps_one_place_in_line(
    ws: Sockets,
) -> None:
    """The second request answers `matching` with the same ticket: the socket is in line
    once, so it is never paired with itself and is told `matched` once."""
    ana = await ws.open(LOBBY)
    first = await quickmatch(ana, "ana")

    again = await quickmatch(ana, "ana")

    assert again == first
    assert await tickets() == [("ana", None, "")]

    bo = await ws.open(LOBBY)
    bo_ticket = await quickmatch(bo, "bo")
    assert bo_ticket > first  # arrival order
    ana_matched, bo_matched = await matched(ana), await matched(bo)

    assert ana_matched["room"] == bo_matched["room"]
    assert (ana_matched["mark"], ana_matched["opponent"]) == ("X", "bo")
    assert (bo_matched["mark"], bo_matched["opponent"]) == ("O", "ana")
    room = ana_matched["room"]
    assert await tickets() == [("ana", room, "X"), ("bo", room, "O")]


# --- closing the socket leaves the line ---------------------------------------------------


async def test_closing_the_socket_leaves_the_line_and_a_later_pair_does_not_pair_it(
    ws: Sockets,
) -> None:
    ana = await ws.open(LOBBY)
    await quickmatch(ana, "ana")
    assert await tickets() == [("ana", None, "")]

    await ana.close()  # returns once the consumer has handled the close

    assert await tickets() == []
    bo, cy = await ws.open(LOBBY), await ws.open(LOBBY)
    await quickmatch(bo, "bo")
    await quickmatch(cy, "cy")
    bo_matched, cy_matched = await matched(bo), await matched(cy)

    assert bo_matched["room"] == cy_matched["room"]
    assert (bo_matched["mark"], bo_matched["opponent"]) == ("X", "cy")
    assert (cy_matched["mark"], cy_matched["opponent"]) == ("O", "bo")
    room = bo_matched["room"]
    assert await tickets() == [("bo", room, "X"), ("cy", room, "O")]
    assert not await Room.objects.filter(Q(x_name="ana") | Q(o_name="ana")).aexists()


# --- a pair: matching, matched, and the tokens take the seats -----------------------------


async def test_two_sockets_get_matching_then_matched_and_the_tokens_take_the_seats(
    ws: Sockets,
) -> None:
    ana, bo = await ws.open(LOBBY), await ws.open(LOBBY)

    ana_ticket = await quickmatch(ana, "ana")
    bo_ticket = await quickmatch(bo, "bo")
    ana_matched, bo_matched = await matched(ana), await matched(bo)

    assert bo_ticket > ana_ticket
    room = ana_matched["room"]
    assert isinstance(room, str)
    assert room.startswith("qm-")
    assert ana_matched == {
        "type": "matched",
        "room": room,
        "mark": "X",  # the older ticket
        "token": ana_matched["token"],
        "opponent": "bo",
    }
    assert bo_matched == {
        "type": "matched",
        "room": room,
        "mark": "O",
        "token": bo_matched["token"],
        "opponent": "ana",
    }
    assert ana_matched["token"] != bo_matched["token"]

    # The room exists with both seats reserved before anyone connects to it.
    x = await ws.open(room)
    assert x.first_state["version"] == 2
    assert x.first_state["status"] == "playing"
    assert x.first_state["turn"] == "X"
    assert x.first_state["players"] == {
        "X": {"name": "ana", "online": False},
        "O": {"name": "bo", "online": False},
    }

    # Each token takes the seat reserved for it; the room does not change hands.
    assert await x.join("ana", token=ana_matched["token"]) == {
        "type": "joined",
        "mark": "X",
        "token": ana_matched["token"],
    }
    o = await ws.open(room)
    assert await o.join("bo", token=bo_matched["token"]) == {
        "type": "joined",
        "mark": "O",
        "token": bo_matched["token"],
    }
    both_online = await o.state_where(
        lambda s: s["players"]["X"]["online"] is True and s["players"]["O"]["online"] is True
    )
    assert both_online["version"] == 2
    assert both_online["players"] == {
        "X": {"name": "ana", "online": True},
        "O": {"name": "bo", "online": True},
    }

    # The seats play: X opens, O answers.
    await x.send({"type": "move", "cell": 4})
    assert (await o.state_at(3))["board"][4] == "X"
    await o.send({"type": "move", "cell": 0})
    assert (await x.state_at(4))["board"][0] == "O"

    # Nobody else gets in without a token.
    stranger = await ws.open(room)
    await stranger.send({"type": "join", "name": "eve"})
    assert await stranger.error() == "room_full"
