"""Reading the state of the stack's streams as the chaos scenarios judge it: consumer groups, their
pending entries and lag, and the dead letters."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from shared import events
from shared.bus import entry_body, read_entry
from shared.events import ContractError


@dataclass(frozen=True)
class Group:
    stream: str
    name: str
    pending: int
    lag: int | None  # None: the server cannot tell (entries trimmed past the group's position)


def groups(client: redis.Redis) -> list[Group]:
    """Every consumer group of every mesh stream (the deadletter stream has none)."""
    found = []
    for stream in events.ALL_STREAMS:
        if not client.exists(stream):
            continue
        for info in client.xinfo_groups(stream):  # type: ignore[union-attr]
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            found.append(Group(str(stream), name, int(info["pending"]), info.get("lag")))
    return found


def groups_by_stream(client: redis.Redis) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    for group in groups(client):
        by_stream.setdefault(group.stream, []).append(group.name)
    return by_stream


def wait_drained(client: redis.Redis, *, timeout: float) -> list[Group]:
    """Until every group has read every entry and acknowledged each; the groups still behind if not."""
    deadline = time.monotonic() + timeout
    while True:
        behind = [g for g in groups(client) if g.pending or g.lag]
        if not behind or time.monotonic() >= deadline:
            return behind
        time.sleep(0.5)


def letters(client: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
    """(letter entry id, the letter's payload) of every dead letter, oldest first. An entry of the
    ``deadletter`` stream that is no letter (written there by a broken producer: the monitor's group reads
    the stream, so it is flooded too) is left out: its own letter is among the found."""
    found = []
    entries: Any = client.xrange(events.DEADLETTER)
    for raw_id, fields in entries:
        with contextlib.suppress(ContractError, KeyError):
            letter = read_entry(entry_body(fields), events.DEADLETTER)
            found.append((raw_id.decode(), letter.payload.model_dump()))
    return found


def letter_counts(found: list[tuple[str, dict[str, Any]]]) -> Counter[tuple[str, str]]:
    return Counter((letter["stream"], letter["group"]) for _, letter in found)


def entry_ms(entry_id: str) -> int:
    """The server time (ms) an entry was added, from its id."""
    return int(entry_id.split("-")[0])
