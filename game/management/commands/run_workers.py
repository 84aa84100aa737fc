"""`python manage.py run_workers --concurrency 4`: one process of the worker fleet."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import start_http_server

from game import jobs, play
from workers.runtime import Worker
from workers.topology import TopologyMismatch

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a worker of the job fleet (results, computer moves, quick match)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=4, help="jobs in hand at once")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.WORKER_METRICS_PORT,
            help="Prometheus /metrics port (0: off)",
        )
        parser.add_argument("--grace", type=float, default=25.0, help="SIGTERM: seconds to finish")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.RABBITMQ_URL:
            raise CommandError("RABBITMQ_URL is not set: the worker fleet needs the broker.")
        if options["metrics_port"]:
            start_http_server(options["metrics_port"])
        worker = Worker(
            settings.RABBITMQ_URL,
            jobs.HANDLERS,
            concurrency=options["concurrency"],
            retry_delays=settings.JOB_RETRY_DELAYS,
            grace=options["grace"],
            periodic=jobs.sweep,
            delivery_limit=settings.JOB_DELIVERY_LIMIT,
            depth_seconds=settings.WORKER_QUEUE_DEPTH_SECONDS,
        )
        try:
            asyncio.run(self._run(worker))
        except TopologyMismatch as exc:
            raise CommandError(str(exc)) from exc

    async def _run(self, worker: Worker) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await worker.run(stop)
        finally:
            await play.close_store()
