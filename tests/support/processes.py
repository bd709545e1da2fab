"""Finding a test's processes: by environment (BentoML starts workers in sessions of their own, so a
process group does not hold them all), by command line, or as the tree under one process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path


def _processes() -> Iterator[Path]:
    """``/proc/<pid>`` of every process that exists as this is read."""
    return (proc for proc in Path("/proc").iterdir() if proc.name.isdigit())


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, or not ours
        return None


def pids_with_env(name: str, value: str) -> list[int]:
    """Processes of this user whose environment has ``name=value``."""
    wanted = f"{name}={value}".encode()
    return [
        int(proc.name)
        for proc in _processes()
        if (environ := _read(proc / "environ")) is not None and wanted in environ.split(b"\0")
    ]


def kill_all_with_env(name: str, value: str) -> None:
    for pid in pids_with_env(name, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pid_by_argv(*parts: bytes) -> int:
    """The oldest (lowest pid: the parent of any that it started) process whose arguments include every
    one of ``parts``; the program may match by its file name, e.g. ``pid_by_argv(b"mlflow", b"server")``."""
    found = []
    for proc in _processes():
        argv = (_read(proc / "cmdline") or b"").split(b"\0")
        names = {*argv, *(Path(a.decode(errors="replace")).name.encode() for a in argv[:2])}
        if all(part in names for part in parts):
            found.append(int(proc.name))
    if not found:
        raise LookupError(f"no process with arguments {parts}")
    return min(found)


def process_tree(root: int) -> list[tuple[int, str]]:
    """``root`` and its descendants, each with its command line (arguments joined by spaces)."""
    children: dict[int, list[int]] = {}
    for proc in _processes():
        stat = _read(proc / "stat")
        if stat is not None:  # the parent pid is the second field after the command's ")"
            children.setdefault(int(stat.rsplit(b")", 1)[1].split()[1]), []).append(int(proc.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        cmdline = _read(Path("/proc") / str(pid) / "cmdline")
        if cmdline is not None:
            tree.append((pid, cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
            todo.extend(children.get(pid, []))
    return tree
