"""``mesh deadletter`` without a mesh: help, argument errors (exit 2, found before Redis is reached), an
unreachable Redis (exit 1, named), and the pieces the verbs are built of (durations, error kinds, the
purge bound, the rendering). Against a real server: tests/integration/test_cli_deadletter_stream.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from shared.ops import deadletters, views
from shared.ops.cli import app
from shared.ops.embedded import free_port
from shared.ops.operate import OperateError


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """A Redis nobody runs: a command that reached for it would exit 1, not 2."""
    return {
        "MESH_STATE_DIR": str(tmp_path / "state"),
        "MESH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "COLUMNS": "200",
    }


def mesh(env: dict[str, str | None], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["deadletter", *args], env=env, input=stdin)


@pytest.mark.parametrize("verb", [[], ["list"], ["show"], ["replay"], ["purge"]], ids=lambda v: v and v[0])
def test_every_deadletter_verb_explains_itself(verb: list[str], env: dict[str, str | None]) -> None:
    result = mesh(env, *verb, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if not verb:
        for name in ("list", "show", "replay", "purge", "Exit codes"):
            assert name in result.output


def test_the_top_level_help_lists_deadletter(env: dict[str, str | None]) -> None:
    result = CliRunner().invoke(app, ["--help"], env=env)
    assert result.exit_code == 0 and "deadletter" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["list", "--since", "yesterday"], "--since: 'yesterday' is not a stream entry id"),
        (["list", "--stream", "no.such"], "unknown stream 'no.such'"),
        (["list", "--limit", "0"], ""),
        (["show"], ""),  # ID is required
        (["show", "12-ab"], "ID: '12-ab' is not a stream entry id"),
        (["replay"], "name the letters to replay"),
        (["replay", "1-0", "--stream", "labels"], "name the letters to replay"),
        (["replay", "1-0", "--all"], "name the letters to replay"),
        (["replay", "--stream", "no.such"], "unknown stream 'no.such'"),
        (["replay", "one"], "ID: 'one' is not a stream entry id"),
        (["purge"], "give exactly one of --before and --older-than"),
        (["purge", "--before", "1-0", "--older-than", "7d"], "give exactly one of"),
        (["purge", "--older-than", "a week"], "--older-than: 'a week' is not a duration"),
        (["purge", "--before", "last"], "--before: 'last' is not a stream entry id"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_invalid_arguments_exit_2_before_redis_is_reached(
    args: list[str], says: str, env: dict[str, str | None]
) -> None:
    result = mesh(env, *args)
    assert result.exit_code == 2, result.output
    assert says in result.output


@pytest.mark.parametrize(
    "args", [["list"], ["show", "1-0"], ["replay", "--all"], ["purge", "--older-than", "1d"]]
)
def test_an_unreachable_redis_exits_1_naming_it(args: list[str], env: dict[str, str | None]) -> None:
    result = mesh(env, *args)
    assert result.exit_code == 1, result.output
    assert f"redis is unreachable at {env['MESH_REDIS_URL']}" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("90s", 90_000), ("15m", 900_000), ("1.5h", 5_400_000), ("7d", 604_800_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert deadletters.duration_ms(text) == ms


def test_the_purge_bound_is_the_id_given_or_now_less_the_age() -> None:
    assert deadletters.purge_bound("1700000000000-3", None) == "1700000000000-3"
    assert deadletters.purge_bound(None, "1s", now_ms=1_700_000_005_000) == "1700000004000-0"
    assert deadletters.purge_bound(None, "1w", now_ms=1_000) == "0-0"
    with pytest.raises(OperateError):
        deadletters.purge_bound(None, None)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("invalid event: message: not valid JSON (Expecting value)", "invalid event"),
        ("gave up: consumer died while handling it", "gave up"),
        ("RuntimeError: boom", "RuntimeError"),
        ("httpx.ConnectTimeout: timed out", "httpx.ConnectTimeout"),
        ("no such file: /gone.csv", "rejected"),
    ],
)
def test_error_kinds(error: str, kind: str) -> None:
    assert deadletters.error_kind(error) == kind


def rendered(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_the_listing_and_a_letter_render() -> None:
    row = {
        "id": "1700000000000-0",
        "stream": "labels",
        "group": "monitor",
        "message_id": "1699999999999-0",
        "error": "invalid event: message: not valid JSON",
        "error_kind": "invalid event",
        "attempts": 1,
        "when": "2023-11-14T22:13:20+00:00",
        "replayed_as": None,
    }
    listing = {
        "total": 3,
        "shown": 1,
        "counts": [{"stream": "labels", "error_kind": "invalid event", "count": 3}],
        "letters": [row],
    }
    text = rendered(views.dead_letters(listing))
    assert "3 dead letter(s)" in text and "newest 1 of 3" in text and "1700000000000-0" in text
    assert rendered(views.dead_letters({"total": 0, "shown": 0, "counts": [], "letters": []})).strip() == (
        "no dead letters"
    )
    detail = {
        **row,
        "letter": {"event_id": "e"},
        "problem": None,
        "original": "{not json",
        "contract_now": "x",
    }
    text = rendered(views.dead_letter_detail(detail))
    assert "{not json" in text and "fails: x" in text and "1699999999999-0" in text
