"""Driving a running mesh from outside, as a client would: upload batches, send traffic and labels, read
what the services announced on the bus, wait for the model they serve. ``mesh demo`` narrates over it;
the end-to-end tests assert through it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import polars as pl
import redis

from shared.bus import entry_body, read_entry
from shared.events import ContractError, Envelope, P, Stream, parse_event
from shared.runtime.auth import bearer_header
from shared.runtime.retry import wait_until
from shared.runtime.settings import MeshSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")

TRAFFIC_CHUNK = 250  # records per /predict_batch request
DEFAULT_MODEL = "churn-demo"  # the demo dataset's model (deploy/config/models/demo.yaml)


class MeshDriverError(RuntimeError):
    """The mesh answered a driven step with something other than what the step needs."""


class MeshDriver:
    """Synchronous HTTP and Redis clients on one mesh's loopback ports; ``wait_timeout`` bounds each wait."""

    def __init__(self, settings: MeshSettings, *, wait_timeout: float = 300.0) -> None:
        self.settings = settings
        self.wait_timeout = wait_timeout
        self.ingest = f"http://127.0.0.1:{settings.ingest_port}"
        self.serving = f"http://127.0.0.1:{settings.serving_port}"
        self.registry = f"http://127.0.0.1:{settings.registry_port}"
        self.monitor = f"http://127.0.0.1:{settings.monitor_port}"
        self.redis = redis.Redis.from_url(settings.effective_redis_url)
        self.http = httpx.Client(timeout=60.0, headers=bearer_header(settings.api_token))
        self._inputs: dict[str, list[str]] = {}

    @functools.cached_property
    def mlflow(self) -> MlflowClient:
        """The mesh's MLflow tracking server and registry (imported on first use: mlflow is slow to load)."""
        from shared.runtime.mlflow_client import mlflow_client

        return mlflow_client(self.settings)

    def close(self) -> None:
        self.http.close()
        self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # --- waiting -------------------------------------------------------------------------------------

    def wait_for(self, what: str, check: Callable[[], T | None]) -> T:
        """``check``'s first truthy result; TimeoutError naming ``what`` after ``wait_timeout``."""
        return wait_until(check, timeout=self.wait_timeout, what=what)

    def served_model(self, model: str = DEFAULT_MODEL) -> dict[str, Any] | None:
        """What serving says of ``model`` (GET /models/{name}) once a version of it is in memory and
        answering; None before, or while serving does not answer."""
        try:
            response = self.http.get(f"{self.serving}/models/{model}")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body if body.get("loaded") else None

    def wait_for_model(
        self, what: str, accept: Callable[[dict[str, Any]], bool], model: str = DEFAULT_MODEL
    ) -> dict[str, Any]:
        """What serving says of ``model`` once ``accept`` takes it."""

        def accepted() -> dict[str, Any] | None:
            served = self.served_model(model)
            return served if served is not None and accept(served) else None

        return self.wait_for(what, accepted)

    def wait_for_version(self, version: str, model: str = DEFAULT_MODEL) -> dict[str, Any]:
        return self.wait_for_model(
            f"serving {model} version {version}", lambda m: m["version"] == version, model
        )

    # --- the bus -------------------------------------------------------------------------------------

    def events(self, stream: Stream[P]) -> list[Envelope[P]]:
        """Every event on ``stream``, decoded through its contract as a consumer would; entries that fail
        it (a broken producer's, dead-lettered by the consumers) are no events and are left out."""
        entries: Any = self.redis.xrange(stream)
        found = []
        for _, fields in entries:
            with contextlib.suppress(ContractError, KeyError):
                found.append(read_entry(entry_body(fields), stream))
        return found

    def last_event(self, stream: Stream[P]) -> Envelope[P]:
        entries: Any = self.redis.xrevrange(stream, count=1)
        if not entries:
            raise MeshDriverError(f"stream {stream} is empty")
        return parse_event(entry_body(entries[0][1]), stream)

    def count(self, stream: Stream[Any]) -> int:
        return int(self.redis.xlen(stream))

    # --- requests ------------------------------------------------------------------------------------

    def upload(self, batch: pl.DataFrame, dataset: str = "demo") -> dict[str, Any]:
        """Upload ``batch`` to ingest as CSV; ingest's answer (snapshot id, event id, ``duplicate``)."""
        response = self.http.post(
            f"{self.ingest}/datasets/{dataset}/batches",
            content=batch.write_csv().encode(),
            headers={"content-type": "text/csv"},
        )
        return _expect(response, 200, 201)

    def predict(self, features: dict[str, Any], model: str = DEFAULT_MODEL) -> httpx.Response:
        return self.http.post(f"{self.serving}/predict", json={"model": model, "features": features})

    def input_columns(self, model: str = DEFAULT_MODEL) -> list[str]:
        """The raw columns a request to ``model`` carries: the inputs of its dataset's declared features."""
        if model not in self._inputs:
            from shared.ml.features import load_feature_spec
            from shared.ml.modeling import model_configs  # imports scikit-learn: only when asked

            config_dir = self.settings.config_dir
            datasets = [c.dataset for c in model_configs(config_dir) if c.model_name == model]
            if not datasets:
                raise MeshDriverError(f"model {model!r} is not declared under {config_dir / 'models'}")
            self._inputs[model] = load_feature_spec(config_dir, datasets[0]).input_columns
        return self._inputs[model]

    def send_traffic(self, batch: pl.DataFrame, model: str = DEFAULT_MODEL) -> list[str]:
        """Send ``batch``'s records, the model's inputs only (no id, time or label), through /predict_batch
        as live traffic for ``model``; the request ids serving gave them, in order."""
        request_ids: list[str] = []
        for chunk in batch.select(self.input_columns(model)).iter_slices(TRAFFIC_CHUNK):
            body = {"model": model, "records": chunk.to_dicts()}
            response = self.http.post(f"{self.serving}/predict_batch", json=body)
            request_ids += [p["request_id"] for p in _expect(response, 200)["predictions"]]
        return request_ids

    def send_labels(self, request_ids: Sequence[str], labels: Iterable[Any]) -> int:
        """Tell the monitor the true outcome of earlier requests (POST /labels); how many were sent."""
        body = [{"request_id": r, "label": y} for r, y in zip(request_ids, labels, strict=True)]
        _expect(self.http.post(f"{self.monitor}/labels", json={"labels": body}), 202)
        return len(body)

    def drift(self, model: str = DEFAULT_MODEL) -> dict[str, Any]:
        """The monitor's drift state of ``model`` (GET /drift/{model}): windows seen and the latest
        window's decision."""
        return _expect(self.http.get(f"{self.monitor}/drift/{model}"), 200)


def _expect(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise MeshDriverError(
            f"{response.request.method} {response.request.url} answered {response.status_code}: "
            f"{response.text}"
        )
    body: dict[str, Any] = response.json()
    return body
