"""The one MLflow client factory: every service and tool reaches tracking and the registry this way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.runtime.settings import MeshSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def mlflow_client(settings: MeshSettings) -> MlflowClient:
    """A client for the mesh's MLflow server. Also points the fluent API (``mlflow.start_run``,
    ``models:/`` URIs in ``mlflow.pyfunc.load_model``) at it, which reads a process-wide setting.

    MLflow is imported here, not at the top: ~110 MB (with pandas) that only processes talking to MLflow hold.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = settings.effective_mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
