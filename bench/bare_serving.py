"""The serving benchmark's baseline: bare Starlette on uvicorn, one worker, answering ``POST /predict``
with the same champion, the same record validation and the same response body as the BentoML service,
and nothing else (no framework middleware, metrics, spans or prediction sampling).

Usage: ``python bench/bare_serving.py --port N [--model NAME]`` with ``MESH_*`` settings pointing at the
MLflow server; without ``--model``, the first model declared under ``<config_dir>/models/``.
"""

from __future__ import annotations

import argparse

import mlflow
import uvicorn
from mlflow.tracking import MlflowClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.serving.holder import LoadedModel, load_version
from services.serving.records import RecordError
from services.serving.sampler import new_request_ids
from shared.ml.modeling import CHAMPION, ModelConfig, limit_native_threads, model_configs
from shared.runtime.settings import MeshSettings


def create_app(loaded: LoadedModel) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            frame = loaded.validate([body.get("features")], "features")
        except RecordError as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)
        answer = loaded.predict(frame).answer(0)
        [request_id] = new_request_ids(1)
        return JSONResponse(
            {"request_id": request_id, **answer, "model": loaded.provenance()},
            headers={**loaded.headers, "X-Request-ID": request_id},
        )

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


def declared_model(settings: MeshSettings, name: str | None) -> ModelConfig:
    """The configuration of the model ``name`` (default: the first declared)."""
    declared = [c for c in model_configs(settings.config_dir) if name in (None, c.model_name)]
    if not declared:
        raise SystemExit(f"no model {name or ''} is declared under {settings.config_dir / 'models'}")
    return declared[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", help="the registered model to serve (default: the first declared)")
    args = parser.parse_args()
    settings = MeshSettings()
    limit_native_threads()
    mlflow.set_tracking_uri(settings.effective_mlflow_uri)  # models:/ URIs resolve through it, as in serving
    client = MlflowClient(settings.effective_mlflow_uri, settings.effective_mlflow_uri)
    config = declared_model(settings, args.model)
    version = client.get_model_version_by_alias(config.model_name, CHAMPION).version
    app = create_app(load_version(client, config, str(version)))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
