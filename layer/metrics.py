"""The layer's Prometheus metrics (alerts and dashboards in k8s/components/monitoring/)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DROPPED = Counter(
    "tictac_layer_dropped_total", "Layer messages dropped before delivery", ["reason"]
)
PUBLISHED = Counter("tictac_layer_published_total", "Layer messages published", ["kind"])
RECEIVED = Counter("tictac_layer_received_total", "Layer messages taken from the broker")
RECONNECTS = Counter("tictac_layer_reconnects_total", "Broker reconnections of the layer")
PUBLISH_SECONDS = Histogram(
    "tictac_layer_publish_seconds",
    "Publish latency including the broker's confirm",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
