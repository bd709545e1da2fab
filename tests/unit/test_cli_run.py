"""``mesh run``: it offers exactly the mesh's services, and each one it offers is one it can run."""

from __future__ import annotations

import importlib
import re

from typer.testing import CliRunner

from shared.ops.cli import app
from shared.runtime.settings import SERVICE_NAMES


def _offered() -> list[str]:
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # the help box, unwrapped
    listed = re.search(r"one of: (.*?) \[required\]", text)
    assert listed, text
    return listed.group(1).split(", ")


def test_run_offers_every_service_and_each_one_it_offers_can_run() -> None:
    offered = _offered()
    assert offered == list(SERVICE_NAMES)
    for name in offered:
        module = importlib.import_module(f"services.{name}.app")
        if name == "serving":  # served by bentoml serve, which needs the BentoML service class
            assert module.MeshServing.name == "mesh-serving"
        else:  # served by uvicorn on the app the service builds
            assert callable(module.create_app), name
