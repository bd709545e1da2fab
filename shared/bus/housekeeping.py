"""What keeps the bus's footprint in Redis bounded: stream retention, dead consumers, stale errors.

Every started bus runs one pass per ``bus_retention_interval_s`` over the streams it tends (those it
consumes and those it has published to). Per stream, a pass is done by one process of the whole mesh at
a time: a lease (``SET NX PX`` for one interval) picks it, so replicas neither repeat the work nor trim
a stream twice over from the same reading. What a pass does for a stream it holds the lease of:

* **Retention.** Over its cap (``stream_maxlen``), the stream is trimmed with ``XTRIM MINID ~ floor
  LIMIT excess``. The floor is the slowest group's position: per group, its oldest pending entry, else
  the entry after its last-delivered id; so no entry a group has yet to read or acknowledge is deleted.
  ``~`` trims whole radix nodes below the floor only, and the limit (the entries over the cap, at most
  ``TRIM_LIMIT``) keeps the stream at or above its cap. A stream with no group yet is kept to its cap
  (``MAXLEN ~``): a group created later starts at ``0`` and drains what is left. Entries held over the
  cap by a lagging group (and less than one radix node that ``~`` leaves) are the
  ``mesh_stream_over_cap_entries`` gauge; the slowest group is logged.
  The optional valve ``bus_stream_hard_maxlen`` trims to that length even past a lagging group, whose
  entries are then lost (counted with reason ``hard_maxlen``); unset, a stuck group keeps everything.
* **Dead consumers.** Every process start reads under a new consumer name; a consumer idle longer than
  ``bus_dead_consumer_after_s`` holding no pending entries is removed (XGROUP DELCONSUMER). The bound
  exceeds the blocking read (a live consumer touches its group more often) and the reclaim idle time.
  A consumer is never removed while it holds an entry: one that died with some keeps its name until a
  live consumer of its group has reclaimed them (XGROUP DELCONSUMER would drop them unacknowledged).
* **Stale errors.** The last error of each failing entry is kept in a hash per group
  (``mesh:errors:<stream>:<group>``) for its final dead letter; delivery deletes it on ack or dead
  letter, and this pass deletes any left for an entry no longer pending (acknowledged by hand, trimmed
  by the valve), ``ERRORS_PAGE`` fields per group per pass.

A pass costs one pipelined round trip when this process holds no lease (per tended stream: the lease,
XLEN, XINFO GROUPS), and at most three more when it does (per group: XINFO CONSUMERS, the oldest
pending entry, a page of its errors hash; the pending check of those errors; the writes), whatever the
number of streams. Publishing costs nothing more.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from shared.bus.delivery import as_text, errors_key
from shared.bus.metrics import DEAD_CONSUMERS_REMOVED, STREAM_OVER_CAP, STREAM_TRIMMED
from shared.runtime.logging import get_logger
from shared.runtime.settings import MeshSettings

log = get_logger("mesh.bus")

# The most entries one pass deletes from one stream: a thousand radix nodes or more freed, milliseconds of
# the server's time. A stream written faster than this per interval grows until the pace drops.
TRIM_LIMIT = 100_000
ERRORS_PAGE = 200  # errors-hash fields checked per group per pass (HSCAN COUNT)
# What ``~`` may leave over the cap without any group holding it: less than one radix node, which holds at
# most ``stream-node-max-entries`` (100 by default) entries. More than that over the cap is a lagging group.
NODE_SLACK = 100


@dataclass(frozen=True, order=True)
class EntryId:
    """A stream entry id, ordered as Redis orders them."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: bytes | str) -> EntryId:
        ms, _, seq = as_text(raw).partition("-")
        return cls(int(ms), int(seq or 0))

    def next(self) -> EntryId:
        return EntryId(self.ms, self.seq + 1)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


@dataclass
class GroupView:
    """One consumer group of a stream as a pass sees it."""

    name: str
    pending: int
    last_delivered: EntryId
    oldest_pending: EntryId | None = None
    consumers: list[dict[str, Any]] = field(default_factory=list)
    error_ids: list[str] = field(default_factory=list)

    @property
    def floor(self) -> EntryId:
        """The oldest entry this group still needs: its oldest pending one, else the next it will read."""
        return self.oldest_pending or self.last_delivered.next()


@dataclass
class StreamView:
    """A stream this process holds the lease of in this pass."""

    name: str
    length: int
    groups: list[GroupView]


def _set_consumers(group: GroupView, reply: Any) -> None:
    # An error: the group was destroyed since XINFO GROUPS; no consumer of it to remove.
    group.consumers = [] if isinstance(reply, Exception) else list(reply)


def _set_oldest_pending(group: GroupView, reply: Any) -> None:
    if isinstance(reply, Exception):
        # Its oldest pending entry unknown, the group holds the whole stream this pass (MINID 0-0 trims none).
        group.oldest_pending = EntryId(0, 0)
    elif reply:
        group.oldest_pending = EntryId.parse(reply[0]["message_id"])


class Housekeeping:
    """The passes of one bus process: ``streams`` says which streams it tends, ``redis`` gives its client."""

    def __init__(
        self,
        settings: MeshSettings,
        consumer_name: str,
        redis: Callable[[], aioredis.Redis],
        streams: Callable[[], Iterable[str]],
    ) -> None:
        hard = settings.bus_stream_hard_maxlen
        if hard is not None and hard <= settings.stream_maxlen:
            raise ValueError("MESH_BUS_STREAM_HARD_MAXLEN must exceed MESH_STREAM_MAXLEN")
        # A live consumer touches its group at least once per blocking read, and a dead one's entries are
        # reclaimed after the idle time: past both, a consumer with nothing pending is one of a dead process.
        # Under them, a live consumer could be removed just as its blocking read is served an entry.
        if settings.bus_dead_consumer_after_s * 1000 <= max(
            settings.bus_block_ms, settings.bus_reclaim_idle_ms
        ):
            raise ValueError(
                "MESH_BUS_DEAD_CONSUMER_AFTER_S must exceed MESH_BUS_BLOCK_MS and MESH_BUS_RECLAIM_IDLE_MS"
            )
        self.settings = settings
        self.consumer_name = consumer_name
        self._client = redis
        self._streams = streams
        self._error_cursors: dict[str, int] = {}  # errors hash -> where its HSCAN goes on next pass
        self._held_by: dict[str, str] = {}  # stream -> the group last logged as holding it over its cap

    @property
    def redis(self) -> aioredis.Redis:
        return self._client()

    async def sweep(self) -> None:
        """One pass over the tended streams whose lease this process takes."""
        held = await self._take_leases(sorted(set(self._streams())))
        if not held:
            return
        await self._read_groups(held)
        stale = await self._stale_errors(held)
        await self._write(held, stale)

    async def _take_leases(self, streams: list[str]) -> list[StreamView]:
        lease_ms = max(1, int(self.settings.bus_retention_interval_s * 1000))
        read = self.redis.pipeline(transaction=False)
        for stream in streams:
            read.set(f"mesh:housekeeping:{stream}", self.consumer_name, nx=True, px=lease_ms)
            read.xlen(stream)
            read.xinfo_groups(stream)
        replies = await read.execute(raise_on_error=False)
        held = []
        for index, stream in enumerate(streams):
            leased, length, groups = replies[3 * index : 3 * index + 3]
            if leased is not True or isinstance(length, Exception):
                continue
            # XINFO GROUPS fails on a stream that does not exist (yet, or since data loss): no groups.
            infos = [] if isinstance(groups, Exception) else groups
            views = [
                GroupView(as_text(g["name"]), int(g["pending"]), EntryId.parse(g["last-delivered-id"]))
                for g in infos
            ]
            held.append(StreamView(stream, int(length), views))
        return held

    async def _read_groups(self, held: list[StreamView]) -> None:
        """Each group's consumers, its oldest pending entry, and a page of its errors hash."""
        read = self.redis.pipeline(transaction=False)
        then: list[Callable[[Any], None]] = []  # per queued read, where its reply goes
        for view in held:
            for group in view.groups:
                read.xinfo_consumers(view.name, group.name)
                then.append(functools.partial(_set_consumers, group))
                if group.pending:
                    read.xpending_range(view.name, group.name, min="-", max="+", count=1)
                    then.append(functools.partial(_set_oldest_pending, group))
                key = errors_key(view.name, group.name)
                read.hscan(key, self._error_cursors.get(key, 0), count=ERRORS_PAGE)
                then.append(functools.partial(self._set_error_page, group, key))
        for handle, reply in zip(then, await read.execute(raise_on_error=False), strict=True):
            handle(reply)

    def _set_error_page(self, group: GroupView, key: str, reply: Any) -> None:
        if isinstance(reply, Exception):
            return
        cursor, fields = reply
        self._error_cursors[key] = int(cursor)
        group.error_ids = [as_text(f) for f in fields]

    async def _stale_errors(self, held: list[StreamView]) -> dict[tuple[str, str], list[str]]:
        """Per (stream, group), the ids in its errors hash that are no longer pending: acknowledged, dead
        lettered or trimmed. An entry's error is written only while it is pending, so none is lost here."""
        check = self.redis.pipeline(transaction=False)
        asked: list[tuple[str, str, str]] = []
        for view in held:
            for group in view.groups:
                for message_id in group.error_ids:
                    check.xpending_range(view.name, group.name, min=message_id, max=message_id, count=1)
                    asked.append((view.name, group.name, message_id))
        if not asked:
            return {}
        replies = await check.execute(raise_on_error=False)
        stale: dict[tuple[str, str], list[str]] = {}
        for (stream, group_name, message_id), reply in zip(asked, replies, strict=True):
            if not isinstance(reply, Exception) and not reply:
                stale.setdefault((stream, group_name), []).append(message_id)
        return stale

    async def _write(self, held: list[StreamView], stale: dict[tuple[str, str], list[str]]) -> None:
        """The trims, removals and deletions decided, in one round trip."""
        write = self.redis.pipeline(transaction=False)
        then: list[Callable[[int], None]] = []  # per queued write, what to do with its reply
        for view in held:
            reason = self._trim(write, view)
            if reason is not None:
                then.append(functools.partial(self._trimmed, view, reason))
            else:
                STREAM_OVER_CAP.labels(view.name).set(0)
                self._held_by.pop(view.name, None)
            for group in view.groups:
                for consumer in self._dead_consumers(group):
                    write.xgroup_delconsumer(view.name, group.name, consumer)
                    then.append(functools.partial(self._consumer_removed, view.name, group.name, consumer))
        for (stream, group_name), ids in stale.items():
            write.hdel(errors_key(stream, group_name), *ids)
            then.append(functools.partial(self._errors_removed, stream, group_name))
        if not then:
            return
        for handle, reply in zip(then, await write.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception):
                log.warning("housekeeping write failed", error=str(reply))
            else:
                handle(int(reply))

    def _trim(self, write: Any, view: StreamView) -> str | None:
        """Queue the stream's trim, if it is over its cap; the reason it is trimmed for."""
        cap, hard = self.settings.stream_maxlen, self.settings.bus_stream_hard_maxlen
        if hard is not None and view.length > hard:
            write.xtrim(view.name, maxlen=hard, approximate=True, limit=min(view.length - hard, TRIM_LIMIT))
            return "hard_maxlen"
        if view.length <= cap:
            return None
        limit = min(view.length - cap, TRIM_LIMIT)
        if view.groups:
            floor = min(group.floor for group in view.groups)
            write.xtrim(view.name, minid=str(floor), approximate=True, limit=limit)
        else:
            write.xtrim(view.name, maxlen=cap, approximate=True, limit=limit)
        return "cap"

    def _trimmed(self, view: StreamView, reason: str, count: int) -> None:
        STREAM_TRIMMED.labels(view.name, reason).inc(count)
        over = max(0, view.length - count - self.settings.stream_maxlen)
        STREAM_OVER_CAP.labels(view.name).set(over)
        if reason == "hard_maxlen":
            log.error(
                "stream over its hard length: trimmed past its slowest group, whose unread entries are lost",
                stream=view.name,
                trimmed=count,
                slowest_group=self._slowest(view),
            )
            return
        slowest = self._slowest(view) if over > NODE_SLACK else None
        if slowest and self._held_by.get(view.name) != slowest:
            log.warning(
                "stream kept over its cap by its slowest group", stream=view.name, group=slowest, over=over
            )
        if slowest:
            self._held_by[view.name] = slowest
        else:
            self._held_by.pop(view.name, None)

    @staticmethod
    def _slowest(view: StreamView) -> str | None:
        return min(view.groups, key=lambda group: group.floor).name if view.groups else None

    def _dead_consumers(self, group: GroupView) -> list[str]:
        """Consumers of ``group`` idle longer than the bound that hold no pending entries."""
        after_ms = self.settings.bus_dead_consumer_after_s * 1000
        return [
            as_text(consumer["name"])
            for consumer in group.consumers
            if int(consumer["pending"]) == 0 and int(consumer["idle"]) > after_ms
        ]

    @staticmethod
    def _errors_removed(stream: str, group: str, count: int) -> None:
        log.info("stale errors removed", stream=stream, group=group, count=count)

    def _consumer_removed(self, stream: str, group: str, consumer: str, pending: int) -> None:
        DEAD_CONSUMERS_REMOVED.labels(stream, group).inc()
        if pending:
            # It read entries between XINFO CONSUMERS and its removal: a process frozen past the bound that
            # woke in that very round trip. Those entries left the group's pending list with it.
            log.error(
                "removed a consumer that had just read entries",
                stream=stream,
                group=group,
                consumer=consumer,
                entries=pending,
            )
        else:
            log.info("dead consumer removed", stream=stream, group=group, consumer=consumer)
