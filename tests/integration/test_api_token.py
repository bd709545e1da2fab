"""``MESH_API_TOKEN`` set: uploads to ingest and labels to the monitor need its bearer token (401 naming
``authorization`` without it), while probes, metrics and API documents stay open; unset, they need none.
The real apps on a real Redis-compatible server (serving's side: test_serving_models.py's lru server)."""

from __future__ import annotations

import httpx
import pytest

from shared.runtime.auth import bearer_header
from shared.runtime.settings import MeshSettings
from tests.support.data import demo_csv
from tests.support.servers import mesh

pytestmark = pytest.mark.integration

TOKEN = "api-test-token"
CSV = {"content-type": "text/csv"}
LABELS = {"labels": [{"request_id": "r-1", "label": 1}]}


async def test_the_data_plane_needs_the_token_when_one_is_set(settings: MeshSettings) -> None:
    guarded = settings.model_copy(update={"api_token": TOKEN})
    async with mesh(guarded, ("ingest", "monitor")) as urls, httpx.AsyncClient(timeout=30) as http:
        upload, labels = f"{urls['ingest']}/datasets/demo/batches", f"{urls['monitor']}/labels"
        for headers in (
            {},
            bearer_header("not-it"),
            {"authorization": TOKEN},
            {"authorization": f"Basic {TOKEN}"},
        ):
            refused = [
                await http.post(upload, content=demo_csv(5), headers={**CSV, **headers}),
                await http.post(labels, json=LABELS, headers=headers),
            ]
            for response in refused:
                assert response.status_code == 401, response.text
                assert response.json()["field"] == "authorization"
                assert response.headers["www-authenticate"] == "Bearer"
        stored = await http.post(upload, content=demo_csv(5), headers={**CSV, **bearer_header(TOKEN)})
        assert stored.status_code == 201, stored.text
        accepted = await http.post(labels, json=LABELS, headers=bearer_header(TOKEN))
        assert accepted.status_code == 202, accepted.text
        for url in urls.values():
            for path in ("/healthz", "/metrics", "/openapi.json"):
                assert (await http.get(f"{url}{path}")).status_code == 200, (url, path)
            # Open, whatever it answers (the monitor is not ready here: no MLflow in this test).
            assert (await http.get(f"{url}/readyz")).status_code in (200, 503)
        document = (await http.get(f"{urls['ingest']}/openapi.json")).json()
        assert "apiToken" in document["components"]["securitySchemes"]


async def test_without_a_token_set_the_data_plane_is_open(settings: MeshSettings) -> None:
    async with mesh(settings, ("ingest",)) as urls, httpx.AsyncClient(timeout=30) as http:
        stored = await http.post(f"{urls['ingest']}/datasets/demo/batches", content=demo_csv(5), headers=CSV)
        assert stored.status_code == 201, stored.text
