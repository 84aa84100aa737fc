"""Where and how a node reaches RabbitMQ, and what it reads of its layer: the settings
side of layer/node.py, and the errors that mean the broker is away."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import aiormq
from channels.exceptions import ChannelFull

# Errors that mean "the broker is not there right now".
BROKER_DOWN = (
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
)


class LayerUnavailable(ChannelFull):  # type: ignore[misc]
    """The broker did not come back within `publish_timeout`."""


@dataclass(frozen=True, slots=True)
class Broker:
    """Where and how a node reaches RabbitMQ (RabbitMQChannelLayer's arguments)."""

    url: str
    prefix: str
    group_exchange: str
    publish_timeout: float
    reconnect_interval: float
    heartbeat: int
    queue_max_length: int


class LayerSettings(Protocol):
    """What a node reads of its layer (RabbitMQChannelLayer in layer/rabbitmq.py)."""

    broker: Broker
    expiry: float
    reconnect_listeners: list[Callable[[], Coroutine[Any, Any, None]]]

    def get_capacity(self, channel: str) -> int: ...
