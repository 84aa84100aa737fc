"""Client frame parsing, without a socket."""

from __future__ import annotations

import json

import pytest

from game.exceptions import GameError
from realtime.protocol import MAX_DEPTH, Chat, Join, Relay, encode, parse


def test_relay_nested_up_to_the_limit_parses() -> None:
    nested = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert isinstance(parse('{"data":' + nested + "}"), Relay)


@pytest.mark.parametrize(
    "frame",
    [
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        '{"data":' + "{" * 40 + "[" * 40 + "]" * 40 + "}" * 40 + "}",
        "[" * 100_000,
    ],
)
def test_nesting_beyond_the_limit_is_bad_json_without_recursing(frame: str) -> None:
    with pytest.raises(GameError) as caught:
        parse(frame)
    assert caught.value.code == "bad_json"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    frame = '{"data":"' + "[" * 500 + '\\"' + "{" * 500 + '"}'
    assert parse(frame) == Relay("[" * 500 + '"' + "{" * 500)


@pytest.mark.parametrize("frame", ['{"data":NaN}', '{"data":-Infinity}', "NaN"])
def test_non_json_constants_are_bad_json(frame: str) -> None:
    with pytest.raises(GameError) as caught:
        parse(frame)
    assert caught.value.code == "bad_json"


def test_encode_escapes_lone_surrogates_into_valid_utf8() -> None:
    text = encode({"payload": "\ud800 é"})
    text.encode("utf-8")  # would raise on a lone surrogate
    assert text == '{"payload":"\\ud800 \\u00e9"}'


@pytest.mark.parametrize(
    "frame",
    ['{"type":"ping","t":1e999}', '{"data":1e999}', '{"data":[-1e400]}', '{"data":{"x":1E309}}'],
)
def test_numbers_beyond_a_double_are_bad_message(frame: str) -> None:
    """`json` would read them as infinity, which no frame can carry back."""
    with pytest.raises(GameError) as caught:
        parse(frame)
    assert caught.value.code == "bad_message"


def test_large_finite_numbers_still_parse() -> None:
    assert parse('{"data":[1e308,-2.5e-300,123456789012345678901234567890]}') == Relay(
        [1e308, -2.5e-300, 123456789012345678901234567890]
    )


@pytest.mark.parametrize(
    "name", ["   ", "\u3164", "\u3164 \u3164", "\u2800", "a\u202eb", "a\u2066b", "a\x00b", "\t"]
)
def test_blank_names_and_names_with_control_characters_are_bad_message(name: str) -> None:
    for kind in ("join", "quickmatch"):
        with pytest.raises(GameError) as caught:
            parse(json.dumps({"type": kind, "name": name}))
        assert caught.value.code == "bad_message"


@pytest.mark.parametrize(
    "name",
    [
        "Computer",
        "computer",
        " COMPUTER ",
        "\uff23\uff4f\uff4d\uff50\uff55\uff54\uff45\uff52",
        "Comp\u3164uter",
    ],
)
def test_the_computer_opponents_name_is_reserved(name: str) -> None:
    for kind in ("join", "quickmatch"):
        with pytest.raises(GameError) as caught:
            parse(json.dumps({"type": kind, "name": name}))
        assert caught.value.code == "bad_message"
        assert "Computer" in caught.value.message


@pytest.mark.parametrize("name", ["Computers", "Computer 2", "my computer"])
def test_names_that_only_contain_the_computers_name_are_fine(name: str) -> None:
    assert parse(json.dumps({"type": "join", "name": name})) == Join(name=name, token=None)


@pytest.mark.parametrize(
    "text",
    [
        "   ",
        "\n\n",
        "\u3164",
        "gg\x00",
        "gg\u202e",
        "a\rb",
        "1\n2\n3\n4\n5\n6\n7",
        "\n" * 280,
    ],
)
def test_blank_chat_control_characters_and_more_than_5_line_breaks_are_bad_message(
    text: str,
) -> None:
    with pytest.raises(GameError) as caught:
        parse(json.dumps({"type": "chat", "text": text}))
    assert caught.value.code == "bad_message"


@pytest.mark.parametrize("text", ["gg", "g g", "1\n2\n3\n4\n5\n6", "ünïcödé 🎉", "x" * 280])
def test_chat_with_up_to_5_line_breaks_parses(text: str) -> None:
    assert parse(json.dumps({"type": "chat", "text": text})) == Chat(text)


@pytest.mark.parametrize("name", ["ana", "Ana Bo", "ünï", "🎉", "x" * 32])
def test_printable_names_parse(name: str) -> None:
    assert parse(json.dumps({"type": "join", "name": name})) == Join(name=name, token=None)
