"""Client frame parsing, without a socket."""

from __future__ import annotations

import pytest

from game.exceptions import GameError
from realtime.protocol import MAX_DEPTH, Relay, encode, parse


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
