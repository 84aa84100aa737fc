"""Settings for the benchmark's relay servers: the project's settings, another layer."""

import os
from typing import Any

from config.settings import base
from config.settings.base import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
DEBUG = False
_layer = os.environ.get("BENCH_LAYER", "memory")
_redis = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
_LAYERS: dict[str, Any] = {
    "memory": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "rabbitmq": base.CHANNEL_LAYERS,  # the project's RabbitMQ layer (RABBITMQ_URL set)
    "redis": {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_redis], "capacity": 1000},
        }
    },
    "redis-pubsub": {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_redis]},
        }
    },
}
CHANNEL_LAYERS = _LAYERS[_layer]
