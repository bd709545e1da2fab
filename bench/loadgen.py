"""A closed-loop HTTP/1.1 load generator: ``connections`` keep-alive connections, each sending the same
request as soon as the previous answer is read, for ``duration`` seconds after a warm-up.

Raw asyncio sockets with a pre-encoded request: an HTTP client library would cost more CPU than the
servers under test (wrk is not on these machines). Run it in its own process, so the server's process
has a core to itself and both servers compared meet the same client. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    connection_errors: int = 0


async def read_response(
    reader: asyncio.StreamReader, captured: tuple[bytes, ...] = ()
) -> tuple[int, dict[bytes, str]]:
    """Reads one response whole (Content-Length or chunked): its status, and the ``captured`` headers
    (lower-case names) it carried."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("connection closed before the status line")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[bytes, str] = {}
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name in captured:
            headers[name] = value.strip().decode()
    if not chunked:
        await reader.readexactly(length)
        return status, headers
    while size := int((await reader.readline()).split(b";")[0], 16):
        await reader.readexactly(size + 2)
    await reader.readline()  # the blank line after the last chunk
    return status, headers


async def _connection(port: int, request: bytes, warmup_end: float, end: float, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (started := time.perf_counter()) < end:
            writer.write(request)
            status, _ = await read_response(reader)
            if started >= warmup_end:
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        tally.connection_errors += 1
    finally:
        writer.close()


async def run(port: int, path: str, body: bytes, connections: int, duration: float, warmup: float) -> dict:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    tally = Tally()
    warmup_end = time.perf_counter() + warmup
    end = warmup_end + duration
    await asyncio.gather(*(_connection(port, request, warmup_end, end, tally) for _ in range(connections)))
    latencies = np.array(tally.latencies_ms) if tally.latencies_ms else np.array([np.nan])
    ok = tally.statuses.get(200, 0)
    return {
        "connections": connections,
        "duration_s": duration,
        "requests": len(tally.latencies_ms),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "connection_errors": tally.connection_errors,
        "requests_per_s": round(ok / duration, 1),
        "latency_ms": {
            q: round(float(np.percentile(latencies, p)), 2)
            for q, p in (("p50", 50), ("p90", 90), ("p99", 99))
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    result = asyncio.run(
        run(args.port, args.path, args.body.encode(), args.connections, args.duration, args.warmup)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
