"""``mlflow server`` as one process: MLflow's own command (its options, checks and database migrations),
which then becomes its uvicorn server instead of starting it as a child and waiting.

The waiting parent did nothing else in the mesh, whose MLflow runs without the job runner the parent
would supervise (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``), yet held ~300 MB: the command imports
MLflow's whole server to check its options. With ``--workers 1`` uvicorn serves in the process it starts
in, so the embedded MLflow is one process. Signals reach the server directly, as they reached the
parent, which forwarded them.

Usage: ``python -m shared.ops.mlflow_server <mlflow server's own options>`` (the local stack's
``x-embedded`` command in docker-compose.yml; the container runs ``mlflow server`` itself).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def _become(cmd: Sequence[str], *, extra_env: Mapping[str, str] | None = None, **_: Any) -> NoReturn:
    """In place of MLflow's ``_exec_cmd`` for the server command: run it in this process."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], list(cmd), {**os.environ, **(extra_env or {})})


def main(argv: Sequence[str] | None = None) -> None:
    if os.environ.get(JOB_EXECUTION, "").strip().lower() not in ("false", "0"):
        # With jobs on, the parent must stay: it starts and supervises the job runner after the server.
        sys.exit(f"shared.ops.mlflow_server: set {JOB_EXECUTION}=false (or run `mlflow server` itself)")
    import mlflow.server
    from mlflow.cli import cli

    # The one name MLflow's server command spawns its server through (mlflow/server/__init__.py); checked,
    # so that an MLflow that renames it fails here, not by quietly keeping the parent.
    if not callable(getattr(mlflow.server, "_exec_cmd", None)):
        sys.exit("shared.ops.mlflow_server: this MLflow has no mlflow.server._exec_cmd to replace")
    mlflow.server._exec_cmd = _become
    cli.main(["server", *(sys.argv[1:] if argv is None else argv)], prog_name="mlflow")


if __name__ == "__main__":
    main()
