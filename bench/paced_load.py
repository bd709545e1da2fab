"""A paced (open-loop) HTTP/1.1 load generator run in a process of its own, which records every request.

``python -m tests.support.paced_load --port N --body JSON --rate 200 --out FILE`` sends ``POST --path`` at
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
import json
import signal
import time
from pathlib import Path
from typing import Any

from bench.loadgen import read_response

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


if __name__ == "__main__":
    main()
