"""Finding a test's processes by its state directory: BentoML starts workers in sessions of their own,
so a process group does not hold them all."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def pids_with_env(name: str, value: str) -> list[int]:
    """Processes of this user whose environment has ``name=value``."""
    wanted = f"{name}={value}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def kill_all_with_env(name: str, value: str) -> None:
    for pid in pids_with_env(name, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def process_tree(root: int) -> list[tuple[int, str]]:
    """``root`` and its descendants, each with its command line (arguments joined by spaces)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(proc.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        tree.append((pid, cmdline.strip()))
        todo.extend(children.get(pid, []))
    return tree
