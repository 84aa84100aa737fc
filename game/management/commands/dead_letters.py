"""`python manage.py dead_letters list|replay|move-legacy`: the job fleet's dead letters.

- `list [--limit N] [--json]`: the jobs in the dead-letter queue (kind, key, why they
  died, attempts, replays) and a count per kind and reason; nothing is removed.
- `replay (--all | --key KEY [--key KEY ...])`: put them back on the jobs exchange, each
  once: acknowledged from the dead queue only after the broker confirmed the copy
  (workers/deadletters.py says what an interruption can and cannot do).
- `move-legacy`: move what the classic queues of an earlier version hold (`tictac.jobs`,
  its retry queues, `tictac.jobs.dead`) into the quorum topology; once, after the rollout.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers import deadletters, topology


class Command(BaseCommand):
    help = "List, replay (all or by key) the dead-lettered jobs; move the legacy classic queues."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="show the dead letters (removes nothing)")
        listing.add_argument("--limit", type=int, default=None, help="show at most N")
        listing.add_argument("--json", action="store_true", help="one JSON object per line")
        replay = actions.add_parser("replay", help="put dead letters back on the jobs exchange")
        which = replay.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true", help="every dead letter")
        which.add_argument(
            "--key", action="append", default=[], help="a job key (message_id); repeatable"
        )
        actions.add_parser("move-legacy", help="move the classic queues' messages, once")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.RABBITMQ_URL:
            raise CommandError("RABBITMQ_URL is not set: the dead letters live in the broker.")
        action = options["action"]
        if action == "list":
            self._list(options["limit"], options["json"])
        elif action == "replay":
            keys = [] if options["all"] else list(options["key"])
            asyncio.run(self._interruptible(self._replay(keys)))
        else:
            asyncio.run(self._interruptible(self._move_legacy()))

    def _list(self, limit: int | None, as_json: bool) -> None:
        count, found = asyncio.run(deadletters.letters(settings.RABBITMQ_URL, limit=limit))
        if as_json:
            for letter in found:
                self.stdout.write(json.dumps(letter.__dict__, sort_keys=True, default=str))
            return
        self.stdout.write(f"{count} dead-lettered jobs in {topology.DEAD_QUEUE}")
        for letter in found:
            self.stdout.write(
                f"  {letter.kind:<14} {letter.key:<40} attempts={letter.attempts}"
                f" replayed={letter.replayed}  {letter.reason}"
            )
        by_cause = Counter((letter.kind, letter.reason.split(":")[0]) for letter in found)
        if by_cause:
            self.stdout.write("count by kind and reason:")
            for (kind, reason), n in by_cause.most_common():
                self.stdout.write(f"  {n:>6}  {kind}  {reason}")
        if limit is not None and count > len(found):
            self.stdout.write(f"(showing {len(found)} of {count})")

    async def _interruptible(self, work: Any) -> None:
        """Run `work` with SIGINT/SIGTERM setting `self.stop`: the message in hand is
        finished (confirmed, acknowledged) before the run ends."""
        self.stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        await work
        if self.stop.is_set():
            self.stdout.write("interrupted: the rest stays where it was")

    def _moved(self, message: AbstractIncomingMessage, routing_key: str) -> None:
        self.stdout.write(f"  {message.type} {message.message_id} -> {routing_key}")

    async def _replay(self, keys: list[str]) -> None:
        result = await deadletters.replay(
            settings.RABBITMQ_URL, keys=set(keys), stop=self.stop, on_move=self._moved
        )
        self.stdout.write(f"replayed {result.moved}; left in {topology.DEAD_QUEUE}: {result.kept}")
        for what in result.unroutable:
            self.stdout.write(f"  not replayed (no queue binds its kind): {what}")
        if keys and result.moved == 0:
            raise CommandError(f"no dead letter has the key(s) {', '.join(keys)}")

    async def _move_legacy(self) -> None:
        moved = await deadletters.move_legacy(
            settings.RABBITMQ_URL,
            retry_delays=settings.JOB_RETRY_DELAYS,
            stop=self.stop,
            on_move=self._moved,
        )
        if not moved:
            self.stdout.write("no legacy classic job queue here: nothing to move")
        for source, result in moved.items():
            self.stdout.write(f"{source}: moved {result.moved}, left {result.kept}")
            for what in result.unroutable:
                self.stdout.write(f"  not moved (no queue binds its kind): {what}")
        self.stdout.write(
            "the emptied classic queues can go: rabbitmqctl delete_queue <name> (each), "
            f"and the exchange {topology.LEGACY_EXCHANGE!r} once no old replica publishes"
        )
