"""The README's shell commands, taken as written and pointed at a test's stack.

A user copies them into a shell beside ``make up``'s stack: default ports, ``.mesh/`` as the state dir, a
browser, Ctrl-C. A test's stack runs on free ports with its own state dir and no screen, so each block is
rewritten by the substitutions below, each saying why, and nothing else; any other drift between the
README and the product fails the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.ops.compose import launcher_env
from shared.ops.embedded import valkey_server_binary
from shared.runtime.settings import SERVICE_NAMES, MeshSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)
FOLLOW_S = 5  # how long a command that runs until Ctrl-C runs before the test sends it


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in the README, for the failure message
    script: str


def section_blocks(section: str, readme: Path = REPO_ROOT / "README.md") -> list[Block]:
    """The shell blocks under the ``## section`` heading, in order."""
    text = readme.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return [
        Block(line=text[: start + m.start()].count("\n") + 1, script=m.group(1)) for m in FENCE.finditer(body)
    ]


def for_stack(script: str, settings: MeshSettings, values: Mapping[str, str] = {}) -> str:
    """``script`` aimed at the stack of ``settings`` instead of ``make up``'s defaults."""
    defaults = MeshSettings.model_construct()
    for name in ("redis", "mlflow", *SERVICE_NAMES):
        default, actual = getattr(defaults, f"{name}_port"), getattr(settings, f"{name}_port")
        # The stack's own ports (free ones, so tests never collide with a running stack).
        script = script.replace(f"127.0.0.1:{default}/", f"127.0.0.1:{actual}/")
        script = script.replace(f"127.0.0.1:{default} ", f"127.0.0.1:{actual} ")
        script = script.replace(f"-p {default} ", f"-p {actual} ")
    # The stack's state dir, where the README names the local stack's (.mesh/).
    script = script.replace(".mesh/", f"{settings.state_dir.resolve()}/")
    # An HTTP error fails the block (the README's curl, as a person reads its answer, would not).
    script = re.sub(r"(?m)(^|\s)curl ", r"\1curl --fail-with-body -sS ", script)
    # No screen: what `open` shows in a browser must at least be served.
    script = re.sub(r"(?m)^open ", "curl --fail-with-body -sS -o /dev/null ", script)
    # What runs until Ctrl-C gets it after a while; the interrupt is its normal end.
    script = re.sub(
        r"(?m)^(\.venv/bin/mesh (?:logs -f|watch)\b[^#\n]*)",
        rf"timeout -s INT {FOLLOW_S} \1|| [ $? -eq 124 ] ",
        script,
    )
    # The Redis CLI of the embedded server, on a machine without Redis's own.
    script = re.sub(r"(?m)^redis-cli ", f"{valkey_server_binary().with_name('valkey-cli')} ", script)
    for placeholder, value in values.items():  # what the README asks the reader to fill in
        script = script.replace(placeholder, value)
    return script


def run_block(block: Block, settings: MeshSettings, values: Mapping[str, str] = {}) -> str:
    """Runs one block in bash (stopping at the first failing command) from the repository root, in the
    stack's environment; its output, or an AssertionError naming the README line and what it printed."""
    env = launcher_env(settings)
    env["BROWSER"] = shutil.which("true") or "true"  # `--open` finds a "browser" that shows nothing
    script = for_stack(block.script, settings, values)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        f"README.md:{block.line}: exit {done.returncode}\n{script}\n--- stdout\n{done.stdout}"
        f"\n--- stderr\n{done.stderr}"
    )
    return done.stdout
