"""What each process imports decides most of its memory: MLflow (~110 MB with pandas), scikit-learn
(~70 MB for its metrics alone, more per estimator family) and skops belong only in processes that log,
load or score models. A service that only reads configurations and data (ingest; features without
retention) and BentoML's arbiter, which imports the serving module only to start its workers, hold none.

Each check runs in a fresh interpreter: this test process has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared.runtime.settings import REPO_ROOT

MODEL_LIBRARIES = ("mlflow", "sklearn", "skops", "pandas", "scipy", "xgboost", "lightgbm")

PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in {libraries} if m in sys.modules)))
"""


def _held_after(code: str, libraries: tuple[str, ...] = MODEL_LIBRARIES) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, libraries=libraries)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=True,
    )  # fmt: skip
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("service", ["ingest", "features"])
def test_a_service_that_holds_no_model_imports_no_model_library(service: str) -> None:
    code = (
        f"from services.{service}.app import create_app\n"
        "from shared.runtime.settings import MeshSettings\n"
        "create_app(MeshSettings())"
    )
    assert _held_after(code) == []


def test_a_monitor_holds_no_charting_library_until_a_report_is_drawn() -> None:
    """matplotlib draws the drift report a person opens, and only that (~30 MB an idle monitor need not
    hold); the report still draws its charts."""
    code = (
        "from services.monitor.app import create_app\n"
        "from shared.runtime.settings import MeshSettings\n"
        "create_app(MeshSettings())"
    )
    assert _held_after(code, ("matplotlib",)) == []
    drawn = "from services.monitor.report import _figure, _png\n_png(_figure(2, 1))"
    assert _held_after(drawn, ("matplotlib",)) == ["matplotlib"]


def test_the_serving_module_bentomls_arbiter_imports_holds_no_model_library() -> None:
    assert _held_after("import services.serving.app") == []


def test_reading_every_kind_of_configuration_imports_no_model_library() -> None:
    code = (
        "from shared.ml import datasets, declaration, features, modeling, monitoring, tasks\n"
        "from tests.support.data import CONFIG_DIR\n"
        "for name in ('demo', 'cancer', 'wine'):\n"
        "    modeling.load_model_config(CONFIG_DIR, name)\n"
        "    features.load_feature_spec(CONFIG_DIR, name)\n"
        "    datasets.load_schema(CONFIG_DIR, name)"
    )
    assert _held_after(code) == []


def test_native_threads_limited_before_any_model_library_is_imported_stay_limited() -> None:
    """A serving worker limits OpenMP and BLAS to one thread at its start, before it loads a model (and with
    it scikit-learn): the limit must still reach scikit-learn's OpenMP runtime."""
    code = (
        "from shared.ml.modeling import limit_native_threads\n"
        "limit_native_threads()\n"
        "import sklearn.ensemble, threadpoolctl\n"
        "print(json.dumps([(i['internal_api'], i['num_threads']) for i in threadpoolctl.threadpool_info()]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import json\n{code}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=True,
    )  # fmt: skip
    pools = json.loads(result.stdout.strip().splitlines()[-1])
    assert "openmp" in {api for api, _ in pools}
    assert all(threads == 1 for _, threads in pools), pools
