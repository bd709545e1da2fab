"""Serving's catalog reads every model file: one that does not validate is refused, naming it, and the
others are served; a model whose file breaks while it serves keeps serving as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from services.serving.catalog import ModelCatalog
from shared.ml.modeling import valid_model_configs
from shared.runtime.logging import configure_logging
from tests.support.data import CONFIG_DIR


@pytest.fixture(autouse=True)
def logging_to_this_tests_stdout() -> None:
    """The catalog logs what it refuses: to the stdout of now, not to one an earlier test configured
    logging with (a CLI runner's capture, closed since)."""
    configure_logging("serving")


def _config_dir(tmp_path: Path) -> Path:
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    return config_dir


def test_an_invalid_model_file_is_named_and_the_others_are_served(tmp_path: Path) -> None:
    config_dir = _config_dir(tmp_path)
    broken = config_dir / "models" / "cancer.yaml"
    broken.write_text(broken.read_text().replace("task: binary", "task: ranking"))
    configs, problems = valid_model_configs(config_dir)
    assert "cancer-demo" not in {c.model_name for c in configs} and "churn-demo" in {
        c.model_name for c in configs
    }
    assert [(p.file, p.field) for p in problems] == [(str(broken), "task")]

    catalog = ModelCatalog(config_dir, MlflowClient("http://127.0.0.1:9"), max_loaded=8)
    assert "churn-demo" in catalog.holders and "cancer-demo" not in catalog.holders


async def test_a_model_whose_file_breaks_while_served_keeps_its_holder(tmp_path: Path) -> None:
    config_dir = _config_dir(tmp_path)
    catalog = ModelCatalog(config_dir, MlflowClient("http://127.0.0.1:9"), max_loaded=8)
    assert "cancer-demo" in catalog.holders
    model_file = config_dir / "models" / "cancer.yaml"
    model_file.write_text("model_name: [not, a, name]\n")
    await catalog.rediscover()
    assert "cancer-demo" in catalog.holders  # mid-edit, not gone
    model_file.unlink()
    await catalog.rediscover()
    assert "cancer-demo" not in catalog.holders  # removed: no longer declared
