"""The bus's Prometheus metrics: what every service exports about the events it handles and publishes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_HANDLED = Counter("mesh_events_handled_total", "Events handled successfully", ["stream", "group"])
EVENTS_FAILED = Counter("mesh_events_failed_total", "Handler attempts that raised", ["stream", "group"])
EVENTS_DEADLETTERED = Counter(
    "mesh_events_deadlettered_total", "Events sent to the dead-letter stream", ["stream", "group"]
)
EVENTS_DUPLICATE = Counter(
    "mesh_events_duplicate_total", "Redelivered events skipped as already handled", ["stream", "group"]
)
EVENTS_PUBLISHED = Counter("mesh_events_published_total", "Events published", ["stream"])
CONSUMER_LAG = Gauge("mesh_consumer_lag_messages", "Entries not yet read by the group", ["stream", "group"])
CONSUMER_PENDING = Gauge(
    "mesh_consumer_pending_messages", "Entries read but not acknowledged by the group", ["stream", "group"]
)
STREAM_TRIMMED = Counter(
    "mesh_stream_trimmed_entries_total",
    "Entries trimmed from a stream: 'cap' (read and acknowledged by every group), 'hard_maxlen' (the valve)",
    ["stream", "reason"],
)
STREAM_OVER_CAP = Gauge(
    "mesh_stream_over_cap_entries",
    "Entries kept over the stream's cap after a retention pass: unread or pending in its slowest group",
    ["stream"],
)
DEAD_CONSUMERS_REMOVED = Counter(
    "mesh_bus_dead_consumers_removed_total",
    "Consumers idle too long, with nothing pending, removed",
    ["stream", "group"],
)


def declare_consumer(stream: str, group: str) -> None:
    """A consumer group's counters exported from its start, at 0: a dashboard then shows no failures as 0,
    not as nothing, and the first failure's rate() has a series to start from."""
    for counter in (EVENTS_HANDLED, EVENTS_FAILED, EVENTS_DEADLETTERED, EVENTS_DUPLICATE):
        counter.labels(stream, group)
