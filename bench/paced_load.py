"""A paced (open-loop) HTTP/1.1 load generator run in a process of its own, which records every request,
and the client that runs it (:class:`PacedLoad`) with the figures of a stretch of its requests.

``python -m bench.paced_load --port N --body JSON --rate 200 --out FILE`` sends ``POST --path`` at
``--rate`` requests per second over ``--connections`` keep-alive connections (each its share of the rate,
on a fixed schedule) until SIGTERM or ``--max-duration``, then writes FILE: one row per request with its
connection, when it was due, sent and answered (``time.time()`` seconds, comparable with the test's clock
and the bus's timestamps), its status (0: no answer), the ``X-Model-Version`` and ``X-Serving-Worker``
that answered, and the error, if any. A connection that breaks is opened again for its next request, so a
server that comes back is seen to come back. While it runs, ``--progress FILE`` says every 0.2 s how many
requests were answered (200) and failed, and how far behind its schedule the load is: how long ago the
oldest request that is due and not yet answered was due.

Raw asyncio sockets, answers read by bench/loadgen.py's parser: an HTTP client library would cost more CPU
than the server under test on a 2-core machine. The schedule does not wait for slow answers (no
coordinated omission): a request is due at its time whatever happened before, and its latency counts
from then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import read_response
from shared.runtime.retry import wait_until
from shared.runtime.settings import REPO_ROOT

PROGRESS_EVERY_S = 0.2
READ_TIMEOUT_S = 30.0  # serving's own request timeout (traffic.timeout): an answer later than this is none
CAPTURED_HEADERS = (b"x-model-version", b"x-serving-worker")


class Connection:
    """One keep-alive connection, opened again after it breaks."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> tuple[int, dict[bytes, str]]:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        try:
            writer.write(request)
            return await asyncio.wait_for(read_response(reader, CAPTURED_HEADERS), READ_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def paced(
    connection_index: int,
    port: int,
    request: bytes,
    first_due: float,
    interval: float,
    stop: asyncio.Event,
    rows: list[list[Any]],
    pending: dict[int, float],
) -> None:
    """Send ``request`` at ``first_due``, ``first_due + interval``, ... until ``stop``; a row per request.
    ``pending`` holds, by connection, when its request now due (and not answered yet) was due."""
    connection = Connection(port)
    due = first_due
    try:
        while not stop.is_set():
            pending.pop(connection_index, None)
            if (wait := due - time.time()) > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    break
                except TimeoutError:
                    pass
            pending[connection_index] = due
            sent = time.time()
            try:
                status, headers = await connection.exchange(request)
                error = ""
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as exc:
                status, headers, error = 0, {}, type(exc).__name__
            version, worker = (headers.get(name, "") for name in CAPTURED_HEADERS)
            rows.append([connection_index, due, sent, time.time(), status, version, worker, error])
            due += interval
    finally:
        connection.close()


async def report_progress(path: Path, rows: list[list[Any]], pending: dict[int, float]) -> None:
    """Write what was answered and how far behind the schedule the load is, every PROGRESS_EVERY_S."""
    counted, answered = 0, 0
    while True:
        answered += sum(1 for row in rows[counted:] if row[4] == 200)
        counted = len(rows)
        behind = max((time.time() - due for due in pending.values()), default=0.0)
        progress = {"answered": answered, "failed": counted - answered, "behind_s": round(behind, 3)}
        path.with_suffix(".tmp").write_text(json.dumps(progress))
        path.with_suffix(".tmp").replace(path)  # whole, never half-written, for the reader
        await asyncio.sleep(PROGRESS_EVERY_S)


async def run(args: argparse.Namespace) -> list[list[Any]]:
    body = args.body.encode()
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(args.max_duration, stop.set)
    interval = args.connections / args.rate  # each connection's share of the rate
    start = time.time() + 0.1
    rows: list[list[Any]] = []
    pending: dict[int, float] = {}
    reporter = asyncio.create_task(report_progress(args.progress, rows, pending))
    await asyncio.gather(
        *(
            paced(i, args.port, request, start + i / args.rate, interval, stop, rows, pending)
            for i in range(args.connections)
        )
    )
    reporter.cancel()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--rate", type=float, required=True, help="requests per second, all connections")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--max-duration", type=float, default=600.0, help="stop by then without SIGTERM")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--progress", type=Path, required=True)
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    columns = ["connection", "due", "sent", "done", "status", "version", "worker", "error"]
    args.out.write_text(json.dumps({"columns": columns, "rows": rows}))


# --- the client: runs the generator and reads what it recorded --------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request of the paced load: when it was due, sent and answered (epoch s), and the answer."""

    connection: int
    due: float
    sent: float
    done: float
    status: int  # 0: no answer (the connection broke, or timed out)
    version: str  # X-Model-Version: "<model>/<version>"
    worker: str  # X-Serving-Worker: the worker process's pid
    error: str

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency_ms(self) -> float:
        """From when it was due: a request held back by a slow server counts its wait."""
        return (self.done - self.due) * 1000


class PacedLoad:
    """This module's generator at ``rate`` against ``port`` over ``connections``, until :meth:`stop`."""

    def __init__(self, port: int, rate: float, out: Path, *, body: str, connections: int) -> None:
        self.out = out
        self.progress_file = out.with_suffix(".progress.json")
        args = ["--port", str(port), "--body", body, "--rate", str(rate), "--connections", str(connections)]
        files = ["--out", str(out), "--progress", str(self.progress_file)]
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.paced_load", *args, *files], cwd=REPO_ROOT)

    def progress(self) -> dict[str, Any] | None:
        """Answered and failed so far, and how far behind its schedule (None before the first report)."""
        assert self.proc.poll() is None, "the load generator exited"
        try:
            progress: dict[str, Any] = json.loads(self.progress_file.read_text())
        except FileNotFoundError:
            return None
        return progress

    def wait_answered(self, count: int, what: str) -> None:
        """Wait until ``count`` more requests have been answered than now."""
        start = wait_until(self.progress, timeout=60, what="the load generator's first report")["answered"]
        wait_until(lambda: self.answered() >= start + count, timeout=300, what=what)

    def answered(self) -> int:
        progress = self.progress()
        return progress["answered"] if progress is not None else 0

    def wait_caught_up(self, what: str) -> None:
        """Wait until no request is overdue: every one due by now, but the few in flight, is answered."""
        wait_until(lambda: (p := self.progress()) is not None and p["behind_s"] < 0.5, timeout=300, what=what)

    def stop(self) -> list[Request]:
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(timeout=120) != 0:
            raise RuntimeError("the load generator failed")
        table = json.loads(self.out.read_text())
        return sorted((Request(*row) for row in table["rows"]), key=lambda r: r.due)


@contextlib.contextmanager
def paced_load(port: int, rate: float, out: Path, *, body: str, connections: int) -> Iterator[PacedLoad]:
    load = PacedLoad(port, rate, out, body=body, connections=connections)
    try:
        yield load
    finally:
        if load.proc.poll() is None:
            load.proc.kill()
            load.proc.wait(timeout=30)


def p99(requests: list[Request]) -> float | None:
    latencies = [r.latency_ms for r in requests if r.ok]
    return round(float(np.percentile(latencies, 99)), 1) if latencies else None


def window(requests: list[Request], start: float, end: float) -> list[Request]:
    return [r for r in requests if start <= r.due < end]


def stretch(requests: list[Request]) -> dict[str, Any]:
    """The figures of one stretch of the load."""
    if not requests:
        return {"requests": 0}
    seconds = max(requests[-1].due - requests[0].due, 1e-3)
    return {
        "requests": len(requests),
        "seconds": round(seconds, 2),
        "answered_per_s": round(sum(r.ok for r in requests) / seconds, 1),
        "failed": sum(not r.ok for r in requests),
        "p50_ms": round(float(np.percentile([r.latency_ms for r in requests], 50)), 1),
        "p99_ms": p99(requests),
        "max_ms": round(max(r.latency_ms for r in requests), 1),
    }


def failures(requests: list[Request]) -> dict[str, int]:
    return dict(Counter(r.error or f"HTTP {r.status}" for r in requests if not r.ok))


if __name__ == "__main__":
    main()
