"""The ``mesh`` operator verbs without a mesh: help, argument and payload validation (nothing sent), exit
codes, a stopped mesh named service by service, and the requests each verb makes, against stand-ins for
the services (an httpx MockTransport) and for Redis (a recorder of XADDs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from shared import events
from shared.bus import entry_body
from shared.events import parse_event
from shared.ops import operate, views
from shared.ops.cli import app
from shared.ops.embedded import free_port
from shared.runtime.settings import MeshSettings

Handler = Callable[[httpx.Request], httpx.Response]

INGEST_PAYLOAD = '{"dataset": "demo", "uri": "file:///tmp/batch.csv"}'


class RecordingRedis:
    """Stands in for the mesh's Redis: records each XADD."""

    def __init__(self) -> None:
        self.added: list[tuple[str, dict[str, Any], int | None]] = []

    def xadd(
        self, name: str, fields: dict[str, Any], maxlen: int | None = None, approximate: bool = True
    ) -> bytes:
        self.added.append((name, fields, maxlen))
        return f"{len(self.added)}-0".encode()

    def close(self) -> None:
        pass

    def __enter__(self) -> RecordingRedis:
        return self

    def __exit__(self, *_: object) -> None:
        pass


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """A mesh nobody runs: every port free, a state dir with no token, no token in the environment."""
    return {
        "MESH_HOST": "127.0.0.1",
        "MESH_STATE_DIR": str(tmp_path / "state"),
        "MESH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MESH_REGISTRY_TOKEN": None,
        "MESH_STREAM_MAXLEN": "5000",
        **{
            f"MESH_{service.upper()}_PORT": str(free_port()) for service in ("serving", "registry", "monitor")
        },
        "COLUMNS": "200",
    }


@pytest.fixture
def redis_fake(monkeypatch: pytest.MonkeyPatch) -> RecordingRedis:
    fake = RecordingRedis()
    monkeypatch.setattr(operate, "redis_client", lambda settings: fake)
    return fake


@pytest.fixture
def no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(settings: MeshSettings) -> None:
        raise AssertionError("nothing may be published")

    monkeypatch.setattr(operate, "redis_client", refuse)


@dataclass
class Services:
    """Stands in for the mesh's HTTP services: ``answer`` answers each request; ``requests`` were made."""

    answer: Handler = field(default=lambda request: httpx.Response(500))
    requests: list[httpx.Request] = field(default_factory=list)

    def route(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Services:
    stand_in = Services()
    transport = httpx.MockTransport(stand_in.route)
    monkeypatch.setattr(operate, "http_client", lambda timeout=30.0: httpx.Client(transport=transport))
    return stand_in


def mesh(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def port(env: dict[str, str | None], service: str) -> str:
    value = env[f"MESH_{service.upper()}_PORT"]
    assert value is not None
    return value


# --- help and arguments ------------------------------------------------------------------------------

VERBS = [
    ["models"],
    ["models", "list"],
    ["models", "show"],
    ["models", "promote"],
    ["models", "rollback"],
    ["predict"],
    ["publish"],
    ["retrain"],
    ["drift"],
    ["watch"],
]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_operator_verb_explains_itself(verb: list[str], env: dict[str, str | None]) -> None:
    result = mesh(env, *verb, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and f"{verb[-1]}" in result.output


def test_the_top_level_help_lists_the_verbs_and_the_exit_codes(env: dict[str, str | None]) -> None:
    result = mesh(env, "--help")
    assert result.exit_code == 0
    for verb in ("models", "predict", "publish", "retrain", "drift", "watch", "up", "ingest"):
        assert verb in result.output
    assert "Exit codes" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "m"],  # neither --json nor --file
        ["predict", "m", "--json", "{}", "--file", "records.jsonl"],
        ["models", "promote", "m", "--version", "two", "--token", "t"],
        ["models", "promote", "m"],  # --version is required
        ["watch", "--count", "0"],
        ["publish", "ingest.requested"],  # --json is required
    ],
    ids=[
        "predict-nothing",
        "predict-both",
        "promote-not-a-number",
        "promote-no-version",
        "watch-count",
        "pub",
    ],
)
def test_invalid_arguments_exit_2_sending_nothing(
    args: list[str], env: dict[str, str | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "records.jsonl").write_text("{}\n")
    result = mesh(env, *args)
    assert result.exit_code == 2, result.output


# --- publish -----------------------------------------------------------------------------------------


def test_an_invalid_payload_prints_the_field_errors_exits_2_and_publishes_nothing(
    env: dict[str, str | None], no_redis: None
) -> None:
    result = mesh(env, "publish", "data.ingested", "--json", '{"dataset": "demo", "row_count": -1}')
    assert result.exit_code == 2, result.output
    assert "data.ingested contract (DataIngested)" in result.output
    assert "nothing was published" in result.output
    for error in ("snapshot_id: Field required", "row_count: Input should be greater than or equal to 0"):
        assert error in result.output
    extra = mesh(env, "publish", "ingest.requested", "--json", '{"dataset": "d", "uri": "u", "colour": 1}')
    assert extra.exit_code == 2 and "colour: Extra inputs are not permitted" in extra.output


@pytest.mark.parametrize(
    ("stream", "payload", "says"),
    [
        ("no.such.stream", "{}", "unknown stream 'no.such.stream'; streams: ingest.requested"),
        ("ingest.requested", "{not json", "--json: not valid JSON"),
        ("ingest.requested", "[1, 2]", "--json: expected a JSON object"),
    ],
)
def test_publish_refuses_what_is_not_an_event_of_the_stream(
    stream: str, payload: str, says: str, env: dict[str, str | None], no_redis: None
) -> None:
    result = mesh(env, "publish", stream, "--json", payload)
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_publish_writes_the_entry_the_bus_writes_and_prints_the_event_id(
    env: dict[str, str | None], redis_fake: RecordingRedis
) -> None:
    result = mesh(env, "publish", "ingest.requested", "--json", INGEST_PAYLOAD)
    assert result.exit_code == 0, result.output
    [(stream, fields, maxlen)] = redis_fake.added
    # No cap on write: a MAXLEN here could trim entries a lagging group has not read yet.
    assert stream == "ingest.requested" and set(fields) == {"__data__"} and maxlen is None
    event = parse_event(entry_body({b"__data__": fields["__data__"].encode()}), events.INGEST_REQUESTED)
    assert event.payload.uri == "file:///tmp/batch.csv" and event.payload.trigger_training is True
    assert result.stdout.strip() == event.event_id  # stdout: the id alone, for scripts
    assert event.correlation_id in result.stderr


# --- retrain -----------------------------------------------------------------------------------------


def test_retrain_asks_for_the_models_dataset(env: dict[str, str | None], redis_fake: RecordingRedis) -> None:
    result = mesh(env, "retrain", "cancer-demo", "--reason", "labels look off", "--window-snapshots", "2")
    assert result.exit_code == 0, result.output
    [(stream, fields, _)] = redis_fake.added
    event = parse_event(fields["__data__"], events.RETRAIN_REQUESTED)
    assert stream == "retrain.requested" and result.stdout.strip() == event.event_id
    assert event.payload.dataset == "cancer" and event.payload.reason == "labels look off"
    assert event.payload.window_snapshots == 2
    assert event.payload.evidence == {"requested_by": "mesh retrain", "model_name": "cancer-demo"}


def test_retrain_of_an_undeclared_model_exits_2(env: dict[str, str | None], no_redis: None) -> None:
    result = mesh(env, "retrain", "nope", "--reason", "why not")
    assert result.exit_code == 2, result.output
    assert "model 'nope' is not declared" in result.output and "churn-demo" in result.output
    blank = mesh(env, "retrain", "churn-demo", "--reason", "  ")
    assert blank.exit_code == 2 and "--reason" in blank.output


# --- a mesh that is not running ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "service", "path"),
    [
        (["models", "list"], "serving", "/models"),
        (["models", "show", "m"], "registry", "/models/m"),
        (["models", "promote", "m", "--version", "2", "--token", "t"], "registry", "/models/m/promote"),
        (["models", "rollback", "m", "--token", "t"], "registry", "/models/m/rollback"),
        (["predict", "m", "--json", "{}"], "serving", "/predict"),
        (["drift", "m"], "monitor", "/drift/m"),
    ],
    ids=["list", "show", "promote", "rollback", "predict", "drift"],
)
def test_an_unreachable_service_is_named_with_its_url_and_exits_1(
    args: list[str], service: str, path: str, env: dict[str, str | None]
) -> None:
    result = mesh(env, *args)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"{service} is unreachable at http://127.0.0.1:{port(env, service)}{path}" in text
    assert "is the mesh running?" in text


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "ingest.requested", "--json", INGEST_PAYLOAD],
        ["retrain", "churn-demo", "--reason", "test"],
        ["watch"],
    ],
    ids=["publish", "retrain", "watch"],
)
def test_an_unreachable_redis_is_named_with_its_url_and_exits_1(
    args: list[str], env: dict[str, str | None]
) -> None:
    result = mesh(env, *args)
    assert result.exit_code == 1, result.output
    assert f"redis is unreachable at {env['MESH_REDIS_URL']}" in " ".join(result.output.split())


def test_a_redis_password_is_not_printed() -> None:
    assert operate.redis_location("redis://user:s3cret@cache:6380/1") == "redis://user:***@cache:6380/1"
    assert operate.redis_location("redis://cache:6380/0") == "redis://cache:6380/0"


def test_a_wildcard_bind_address_is_reached_on_loopback() -> None:
    assert operate.service_url(MeshSettings(host="0.0.0.0"), "monitor") == "http://127.0.0.1:8106"
    assert operate.service_url(MeshSettings(host="mesh.internal"), "registry") == "http://mesh.internal:8104"


# --- promote and rollback ----------------------------------------------------------------------------


def promoted(version: str, previous: str, action: str = "promote") -> dict[str, Any]:
    return {
        "model_name": "m",
        "version": version,
        "run_id": "r",
        "model_uri": f"models:/m/{version}",
        "feature_set_id": "fs",
        "snapshot_ids": ["s"],
        "previous_version": previous,
        "action": action,
        "evidence": {"reason": "x"},
        "event_id": "e1",
    }


def test_promote_presents_the_local_stacks_token_and_shows_the_new_champion(
    env: dict[str, str | None], services: Services, tmp_path: Path
) -> None:
    token_file = tmp_path / "state" / "registry-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("stack-token\n")
    services.answer = lambda request: httpx.Response(200, json=promoted("3", "2"))
    result = mesh(env, "models", "promote", "m", "--version", "3")
    assert result.exit_code == 0, result.output
    [request] = services.requests
    assert request.method == "POST" and request.url.path == "/models/m/promote"
    assert request.url.port == int(port(env, "registry"))
    assert json.loads(request.content) == {"version": "3"}
    assert request.headers["authorization"] == "Bearer stack-token"
    assert "m: promoted version 3 (champion); previous: version 2" in result.output
    assert "model.promoted event e1" in result.output

    # --token, then MESH_REGISTRY_TOKEN, win over the file.
    assert mesh(env, "models", "promote", "m", "--version", "3", "--token", "given").exit_code == 0
    assert services.requests[-1].headers["authorization"] == "Bearer given"
    assert mesh({**env, "MESH_REGISTRY_TOKEN": "from-env"}, "models", "rollback", "m").exit_code == 0
    assert services.requests[-1].headers["authorization"] == "Bearer from-env"
    assert services.requests[-1].url.path == "/models/m/rollback" and services.requests[-1].content == b""


def test_without_a_token_promote_exits_2_and_makes_none_up(
    env: dict[str, str | None], services: Services, tmp_path: Path
) -> None:
    result = mesh(env, "models", "promote", "m", "--version", "3")
    assert result.exit_code == 2, result.output
    assert "no registry token" in result.output
    assert not services.requests and not (tmp_path / "state" / "registry-token").exists()


def test_a_refused_promotion_shows_the_status_message_and_field(
    env: dict[str, str | None], services: Services
) -> None:
    services.answer = lambda request: httpx.Response(
        401, json={"error": "missing or wrong bearer token", "field": "authorization"}
    )
    result = mesh(env, "models", "rollback", "m", "--token", "wrong")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "registry answered 401" in text and "missing or wrong bearer token [field: authorization]" in text


def test_rollback_wait_follows_serving_until_it_serves_the_new_champion(
    env: dict[str, str | None], services: Services
) -> None:
    served = iter(["2", "2", "1"])

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json=promoted("1", "2", "rollback"))
        assert request.url.path == "/models/m" and request.url.port == int(port(env, "serving"))
        return httpx.Response(200, json={"name": "m", "version": next(served), "loaded": True})

    services.answer = answer
    result = mesh(env, "models", "rollback", "m", "--token", "t", "--wait", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["version"] == "1" and body["action"] == "rollback" and body["served"]["version"] == "1"
    assert len(services.requests) == 4  # the rollback, then serving asked until it served version 1


def test_wait_gives_up_after_its_timeout_saying_what_serving_serves(
    env: dict[str, str | None], services: Services
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json=promoted("3", "2"))
        return httpx.Response(200, json={"name": "m", "version": "2", "loaded": True})

    services.answer = answer
    result = mesh(env, "models", "promote", "m", "--version", "3", "--token", "t", "--wait", "--timeout", "1")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "serving did not serve m version 3 within 1s: serving version 2 (loaded: True)" in text


# --- models list ---------------------------------------------------------------------------------------


def test_models_list_joins_serving_and_the_registry(env: dict[str, str | None], services: Services) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            status = {"name": "churn-demo", "dataset": "demo", "version": "3", "loaded": True}
            return httpx.Response(200, json={"models": [status], "declared": ["churn-demo", "cancer-demo"]})
        name = request.url.path.rsplit("/", 1)[-1]
        if name == "churn-demo":
            aliases = {"champion": {"version": "4", "run_id": "r4", "tags": {}}, "previous": None}
            aliases["previous"] = {"version": "3", "run_id": "r3", "tags": {}}
        else:
            aliases = {"champion": None, "previous": None}
        return httpx.Response(200, json={"model_name": name, **aliases})

    services.answer = answer
    result = mesh(env, "models", "list", "--json")
    assert result.exit_code == 0, result.output
    churn, cancer = json.loads(result.stdout)
    assert churn == {
        "name": "churn-demo",
        "dataset": "demo",
        "champion": "4",
        "previous": "3",
        "served": "3",
        "loaded": True,
    }
    # Not served, no version: its dataset from the model configs.
    assert cancer == {
        "name": "cancer-demo",
        "dataset": "cancer",
        "champion": None,
        "previous": None,
        "served": None,
        "loaded": False,
    }
    table = mesh(env, "models", "list")
    assert table.exit_code == 0 and "churn-demo" in table.output and "cancer-demo" in table.output


# --- predict -------------------------------------------------------------------------------------------


def test_predict_sends_one_record_and_prints_the_answer(
    env: dict[str, str | None], services: Services
) -> None:
    services.answer = lambda request: httpx.Response(
        200, json={"prediction": 1, "probability": 0.9, "model": {"version": "3"}}
    )
    result = mesh(env, "predict", "churn-demo", "--json", '{"age": 40}')
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["probability"] == 0.9
    [request] = services.requests
    assert request.url.path == "/predict" and request.url.port == int(port(env, "serving"))
    assert json.loads(request.content) == {"features": {"age": 40}, "model": "churn-demo"}


def test_predict_reads_many_records_from_a_json_lines_file(
    env: dict[str, str | None], services: Services, tmp_path: Path
) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text('{"age": 40}\n\n{"age": 41}\n')
    services.answer = lambda request: httpx.Response(200, json={"predictions": [{}, {}]})
    result = mesh(env, "predict", "churn-demo", "--file", str(records))
    assert result.exit_code == 0, result.output
    [request] = services.requests
    assert request.url.path == "/predict_batch"
    assert json.loads(request.content) == {"records": [{"age": 40}, {"age": 41}], "model": "churn-demo"}

    records.write_text('{"age": 40}\n{"age": \n')
    bad = mesh(env, "predict", "churn-demo", "--file", str(records))
    assert bad.exit_code == 2 and f"{records}:2: not valid JSON" in " ".join(bad.output.split())
    assert len(services.requests) == 1


def test_a_refused_prediction_names_the_field_and_exits_1(
    env: dict[str, str | None], services: Services
) -> None:
    body = {"error": "features.age: Input should be a valid integer", "field": "features.age"}
    services.answer = lambda request: httpx.Response(422, json=body)
    result = mesh(env, "predict", "churn-demo", "--json", '{"age": "old"}')
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "serving answered 422" in text and "[field: features.age]" in text


# --- drift and watch ---------------------------------------------------------------------------------


def test_drift_shows_the_summary_and_opens_the_report(
    env: dict[str, str | None], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = {
        "model_name": "m",
        "windows": 3,
        "latest": {
            "model_version": "2",
            "rows": 500,
            "labelled_rows": 0,
            "started_at": "2026-01-01T00:00:00+00:00",
            "ended_at": "2026-01-01T00:01:00+00:00",
            "scores": {"psi": {"age": 0.3}},
            "accuracy": None,
            "performance_drop": None,
            "decision": {
                "retrain": False,
                "episode_active": True,
                "fired": ["psi:age"],
                "reasons": ["waits"],
            },
        },
        "labelled_rows_waiting": 0,
        "open_windows": {"2": 10},
        "references": ["2"],
    }
    services.answer = lambda request: httpx.Response(200, json=summary)
    opened: list[str] = []

    def open_in_browser(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr("webbrowser.open", open_in_browser)
    result = mesh(env, "drift", "m", "--open")
    assert result.exit_code == 0, result.output
    shown_text = " ".join(result.output.split())
    for shown in ("windows evaluated 3", "psi:age", "- waits", "drift episode active", "version 2: 10 rows"):
        assert shown in shown_text
    assert "version 2: 500 rows (0 labelled)" in shown_text
    assert opened == [f"http://127.0.0.1:{port(env, 'monitor')}/drift/m/report"]
    as_json = mesh(env, "drift", "m", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == summary

    services.answer = lambda request: httpx.Response(
        404, json={"error": "model 'x' is not monitored", "field": "model"}
    )
    unknown = mesh(env, "drift", "x")
    assert unknown.exit_code == 1 and "model 'x' is not monitored [field: model]" in unknown.output


def test_watch_refuses_an_unknown_stream(env: dict[str, str | None], no_redis: None) -> None:
    result = mesh(env, "watch", "--stream", "labels", "--stream", "label")
    assert result.exit_code == 2 and "unknown stream 'label'" in result.output


def test_a_watched_entry_shows_what_it_is_about() -> None:
    event = {"event_id": "e", "correlation_id": "c", "type": "labels", "payload": {"dataset": "demo"}}
    seen = operate.Seen("labels", "1-0", event)
    assert seen.subject == "demo"
    line = views.seen_line(seen).plain
    assert "labels" in line and " e " in line and "corr=c" in line and line.endswith(" demo")
    assert json.loads(views.seen_json(seen)) == {"stream": "labels", "entry_id": "1-0", "event": event}
    unreadable = operate.decode_entry("labels", "1-0", {b"__data__": b"{oops"})
    assert unreadable.event is None and unreadable.error


def test_a_service_that_connects_but_does_not_answer_is_told_apart_from_a_stopped_one(
    env: dict[str, str | None], services: Services
) -> None:
    def stuck(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    services.answer = stuck
    result = mesh(env, "models", "rollback", "m", "--token", "t")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"registry did not answer POST http://127.0.0.1:{port(env, 'registry')}/models/m/rollback" in text
    assert "unreachable" not in text


def test_the_drift_summary_prints_the_live_metric_and_its_change_as_metrics_print() -> None:
    latest = {
        "model_version": "1", "rows": 0, "labelled_rows": 199, "performance_metric": "rmse",
        "performance": 2.632712, "performance_drop": 0.025166206585572226, "decision": {"retrain": True},
    }  # fmt: skip
    console = Console(width=200, record=True)
    console.print(views.drift_summary({"model_name": "mpg", "latest": latest}))
    assert "2.6327 (worse by 0.0252)" in console.export_text()
