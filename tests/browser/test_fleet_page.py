"""Two browsers finish one game through the load-balanced fleet (`make fleet`'s shape)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from devtools.fleet import Fleet
from tests.browser.test_page import NewPage, enter_by_link, enter_from_lobby, play, take_seat

pytestmark = [pytest.mark.browser, pytest.mark.fleet]


@pytest.fixture
def fleet(database_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(
        2,
        settings="config.settings.test",
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        log_dir=tmp_path / "fleet",
        env={"GRACEFUL_SHUTDOWN_SECONDS": "3", "DRAIN_READINESS_DELAY_SECONDS": "0"},
    )
    with fleet:
        yield fleet


def test_a_browser_through_the_balancer_and_one_on_the_other_replica_finish_a_game(
    new_page: NewPage, fleet: Fleet
) -> None:
    """Ana comes through HAProxy; Bo is sent to the replica Ana did not get (read from
    her page), so the game crosses replicas whichever one the balancer picked."""
    room = f"fleet-{secrets.token_hex(3)}"
    ana = new_page()
    enter_from_lobby(ana, SimpleNamespace(url=fleet.lb_url), room, "ana")  # type: ignore[arg-type]
    take_seat(ana, "X")
    ana_server = ana.get_by_test_id("server").inner_text()
    names = [replica.name for replica in fleet.replicas]
    assert ana_server in names, f"{ana_server!r} is none of the fleet's replicas {names}"
    elsewhere = next(replica for replica in fleet.replicas if replica.name != ana_server)
    bo = new_page()
    enter_by_link(bo, SimpleNamespace(url=elsewhere.url), room, "bo")  # type: ignore[arg-type]
    take_seat(bo, "O")
    expect(bo.get_by_test_id("server")).to_have_text(elsewhere.name)
    for cell, mark, mover, other in ((0, "X", ana, bo), (3, "O", bo, ana), (1, "X", ana, bo),
                                     (4, "O", bo, ana), (2, "X", ana, bo)):  # fmt: skip
        play(mover, cell, mark, other)
    for page in (ana, bo):
        expect(page.get_by_test_id("status")).to_contain_text("ana wins")
