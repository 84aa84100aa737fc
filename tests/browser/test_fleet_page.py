"""Two browsers finish one game through the load-balanced fleet (`make fleet`'s shape)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from deploy.fleet import Fleet
from tests.browser.test_page import NewPage, enter_by_link, enter_from_lobby, play, take_seat

pytestmark = pytest.mark.browser

RABBITMQ_URL = os.environ.get("RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


@pytest.fixture
def fleet(database_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(
        2,
        settings="config.settings.test",
        database_url=database_url,
        rabbitmq_url=RABBITMQ_URL,
        log_dir=tmp_path / "fleet",
        env={"GRACEFUL_SHUTDOWN_SECONDS": "3", "DRAIN_READINESS_DELAY_SECONDS": "0"},
    )
    with fleet:
        yield fleet


def test_two_browsers_on_different_replicas_finish_a_game_through_the_balancer(
    new_page: NewPage, fleet: Fleet
) -> None:
    lb = SimpleNamespace(url=fleet.lb_url)
    room = f"fleet-{secrets.token_hex(3)}"
    ana = new_page()
    enter_from_lobby(ana, lb, room, "ana")  # type: ignore[arg-type]
    take_seat(ana, "X")
    bo = new_page()
    enter_by_link(bo, lb, room, "bo")  # type: ignore[arg-type]
    take_seat(bo, "O")
    servers = {page.get_by_test_id("server").inner_text() for page in (ana, bo)}
    # leastconn hands the second socket to the replica that has none
    assert len(servers) == 2, f"both pages on one replica: {servers}"
    for cell, mark, mover, other in ((0, "X", ana, bo), (3, "O", bo, ana), (1, "X", ana, bo),
                                     (4, "O", bo, ana), (2, "X", ana, bo)):  # fmt: skip
        play(mover, cell, mark, other)
    for page in (ana, bo):
        expect(page.get_by_test_id("status")).to_contain_text("ana wins")
