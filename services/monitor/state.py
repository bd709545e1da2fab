"""The monitor's state, kept in Redis so that a restarted or second monitor carries on where another left.

What lives here, per model (``mesh:monitor:model:<name>:...``): the open window of predictions of each
version, the labelled rows (for accuracy), the feedback rows waiting for a retrain, how many rows were
labelled since the last performance check, the trigger policy's state and a bounded history of window
results. Across models: the join buffer of predictions waiting for their labels (labels do not name
their model) and the labels that arrived before their prediction.

Intake is two Lua scripts, so a batch is taken whole or not at all, and idempotent by request id: a
redelivered prediction or label changes nothing (a join-buffer entry whose label was joined becomes
``L``, so a repeat of either is ignored while the entry is kept). The scripts name their keys from a
prefix, which a single Redis allows and a Redis Cluster would not.

A window's evaluation reads, decides in Python, then commits in one MULTI guarded by WATCH on the
model's policy key, which every commit writes: two replicas evaluating the same model cannot both commit
the same window (see ``evaluation.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

PREFIX = "mesh:monitor"
HISTORY = 100  # window results kept per model, for /drift and the report

# Both scripts: a labelled row joins the model's labelled rows (accuracy) and feedback (the retrain), and
# trimming a buffer to its capacity forgets its oldest entries.
_SHARED = """
local p = ARGV[1]
local function label_row(model, record, label)
  local m = p .. ':model:' .. model
  local row = '{"label":' .. label .. ',"record":' .. record .. '}'
  redis.call('RPUSH', m .. ':labelled', row)
  redis.call('RPUSH', m .. ':feedback', row)
  redis.call('INCR', m .. ':labelled-since')
end
local function trim(hash, order, cap)
  local excess = redis.call('ZCARD', order) - cap
  while excess > 0 do
    local old = redis.call('ZRANGE', order, 0, math.min(excess, 1000) - 1)
    redis.call('HDEL', hash, unpack(old))
    redis.call('ZREM', order, unpack(old))
    excess = excess - #old
  end
end
"""

# ARGV: prefix, now, capacity, then (request_id, model, version, record JSON) per prediction.
# Returns "model\nversion", rows in its open window, ... for each window a new prediction went to.
_ADD_PREDICTIONS = (
    _SHARED
    + """
local now, cap = ARGV[2], tonumber(ARGV[3])
local joins, order = p .. ':joins', p .. ':joins:order'
local touched, lengths = {}, {}
for i = 4, #ARGV, 4 do
  local rid, model, version, record = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HSETNX', joins, rid, model .. '\\n' .. record) == 1 then
    redis.call('ZADD', order, redis.call('INCR', p .. ':joins:seq'), rid)
    local m = p .. ':model:' .. model
    local window = model .. '\\n' .. version
    if not lengths[window] then table.insert(touched, window) end
    lengths[window] = redis.call('RPUSH', m .. ':window:' .. version, record)
    redis.call('HSETNX', m .. ':window-started', version, now)
    local label = redis.call('HGET', p .. ':unmatched', rid)
    if label then
      redis.call('HDEL', p .. ':unmatched', rid)
      redis.call('ZREM', p .. ':unmatched:order', rid)
      redis.call('HSET', joins, rid, 'L')
      label_row(model, record, label)
    end
  end
end
trim(joins, order, cap)
local out = {}
for _, window in ipairs(touched) do
  table.insert(out, window)
  table.insert(out, lengths[window])
end
return out
"""
)

# ARGV: prefix, capacity, then (request_id, label JSON) per label. Returns model, count, model, count...
_ADD_LABELS = (
    _SHARED
    + """
local cap = tonumber(ARGV[2])
local joins, unmatched, order = p .. ':joins', p .. ':unmatched', p .. ':unmatched:order'
local counts, models = {}, {}
for i = 3, #ARGV, 2 do
  local rid, label = ARGV[i], ARGV[i + 1]
  local entry = redis.call('HGET', joins, rid)
  if not entry then
    if redis.call('HSETNX', unmatched, rid, label) == 1 then
      redis.call('ZADD', order, redis.call('INCR', p .. ':unmatched:seq'), rid)
    end
  elseif entry ~= 'L' then
    local cut = string.find(entry, '\\n', 1, true)
    local model, record = string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1)
    redis.call('HSET', joins, rid, 'L')
    label_row(model, record, label)
    if not counts[model] then
      counts[model] = 0
      table.insert(models, model)
    end
    counts[model] = counts[model] + 1
  end
end
trim(unmatched, order, cap)
local out = {}
for _, model in ipairs(models) do
  table.insert(out, model)
  table.insert(out, counts[model])
end
return out
"""
)


@dataclass(frozen=True)
class ModelKeys:
    """The Redis keys of one model's state."""

    model: str

    @property
    def base(self) -> str:
        return f"{PREFIX}:model:{self.model}"

    def window(self, version: str) -> str:
        return f"{self.base}:window:{version}"

    @property
    def window_started(self) -> str:
        return f"{self.base}:window-started"

    @property
    def labelled(self) -> str:
        return f"{self.base}:labelled"

    @property
    def feedback(self) -> str:
        return f"{self.base}:feedback"

    @property
    def labelled_since(self) -> str:
        return f"{self.base}:labelled-since"

    @property
    def policy(self) -> str:
        return f"{self.base}:policy"

    @property
    def history(self) -> str:
        return f"{self.base}:history"

    @property
    def evaluated(self) -> str:
        return f"{self.base}:windows-evaluated"


class MonitorStore:
    """Intake of predictions and labels, and the reads the evaluation and the HTTP routes need."""

    def __init__(self, redis: Callable[[], aioredis.Redis]) -> None:
        self._redis = redis  # the bus's client, which it opens on first use and again after a restart

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis()

    async def _run(self, script: str, args: list[Any]) -> Any:
        # Sent by hash, with the text once per server that has not seen it (after a restart or FLUSHALL).
        return await self.redis.register_script(script)(args=args)

    async def add_predictions(
        self, records: list[dict[str, Any]], now: float, capacity: int
    ) -> dict[tuple[str, str], int]:
        """Prediction records (``PredictionMade`` payloads as dicts) into windows and the join buffer;
        the rows now open in each (model, version) window a new record went to."""
        args: list[Any] = [PREFIX, repr(now), capacity]
        for record in records:
            args += [
                record["request_id"],
                record["model_name"],
                record["model_version"],
                json.dumps(record, default=str),
            ]
        flat = await self._run(_ADD_PREDICTIONS, args)
        windows = (_text(flat[i]).split("\n", 1) for i in range(0, len(flat), 2))
        return {(model, version): int(n) for (model, version), n in zip(windows, flat[1::2], strict=True)}

    async def add_labels(self, labels: list[tuple[str, Any]], capacity: int) -> dict[str, int]:
        """(request_id, label) pairs joined with their predictions; labelled rows per model, newly joined."""
        args: list[Any] = [PREFIX, capacity]
        for request_id, label in labels:
            args += [request_id, json.dumps(label)]
        flat = await self._run(_ADD_LABELS, args)
        return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def bound(self, model: str, version: str | None, keep: int) -> None:
        """Keep the newest ``keep`` labelled and feedback rows (and open-window rows of ``version``)."""
        keys = ModelKeys(model)
        pipe = self.redis.pipeline(transaction=False)
        pipe.ltrim(keys.labelled, -keep, -1)
        pipe.ltrim(keys.feedback, -keep, -1)
        if version is not None:
            pipe.ltrim(keys.window(version), -keep, -1)
        await pipe.execute()

    async def open_windows(self, model: str) -> dict[str, tuple[int, float | None]]:
        """Each version's open window: rows waiting and when its first row came (epoch seconds)."""
        keys = ModelKeys(model)
        started = {_text(k): float(v) for k, v in (await self.redis.hgetall(keys.window_started)).items()}
        versions = sorted(started)
        pipe = self.redis.pipeline(transaction=False)
        for version in versions:
            pipe.llen(keys.window(version))
        lengths = await pipe.execute()
        return {v: (int(n), started.get(v)) for v, n in zip(versions, lengths, strict=True)}

    async def labelled_since(self, model: str) -> int:
        return int(await self.redis.get(ModelKeys(model).labelled_since) or 0)

    async def labelled_versions(self, model: str, newest: int) -> list[str]:
        """The versions among the model's ``newest`` labelled rows."""
        rows = await self.redis.lrange(ModelKeys(model).labelled, -newest, -1)
        return sorted({json.loads(row)["record"]["model_version"] for row in rows})

    async def history(self, model: str, limit: int = HISTORY) -> list[dict[str, Any]]:
        """The model's window results, oldest first."""
        rows = await self.redis.lrange(ModelKeys(model).history, 0, limit - 1)
        return [json.loads(row) for row in reversed(rows)]

    async def summary(self, model: str) -> dict[str, Any]:
        keys = ModelKeys(model)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.evaluated)
        pipe.lindex(keys.history, 0)
        pipe.llen(keys.feedback)
        windows, latest, waiting = await pipe.execute()
        latest_result = json.loads(latest) if latest else None
        if latest_result is not None:
            latest_result.pop("distributions", None)
        return {
            "model_name": model,
            "windows": int(windows or 0),
            "latest": latest_result,
            "labelled_rows_waiting": int(waiting),
            "open_windows": {v: n for v, (n, _) in (await self.open_windows(model)).items()},
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
