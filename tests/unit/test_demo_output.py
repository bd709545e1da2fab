"""What `make demo` prints at its end: every address whole on one line, however narrow the terminal, so
each stays a link to click or copy (rich used to wrap them mid-URL inside a panel)."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from shared.ops.demo import Demo
from shared.runtime.settings import MeshSettings


def test_every_address_the_demo_points_to_is_printed_whole_on_a_narrow_terminal(tmp_path: Path) -> None:
    settings = MeshSettings(state_dir=tmp_path / "state")
    console = Console(width=60, record=True, force_terminal=False)
    demo = Demo(settings, console)
    demo.where_to_look()
    printed = console.export_text()

    urls = re.findall(r"http://\S+", printed)
    for dataset, model in demo.models.items():
        assert f"{demo.mesh.ingest}/datasets/{dataset}/snapshots" in urls
        assert f"{demo.mesh.registry}/models/{model}" in urls
        assert f"{demo.mesh.monitor}/drift/{model}/report" in urls
        assert f"{settings.effective_mlflow_uri}/#/models/{model}" in urls
    assert f"{demo.mesh.registry}/models/{demo.models['demo']}/rollback" in urls
    assert "valkey-cli -p" in printed and str(tmp_path / "state" / "registry-token") in printed
