"""How the ``mesh`` CLI's operator verbs show what shared/ops/operate.py found, for people (rich).

Scripts use ``--json`` instead, which prints operate's dicts as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Column, Table
from rich.text import Text

from shared.ops.operate import Seen

NONE = "-"


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def _or_none(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def _figure(value: Any) -> str:
    """A metric as the other metrics print: four decimals."""
    return f"{value:.4f}" if isinstance(value, int | float) else _or_none(value)


def _metrics(metrics: Mapping[str, Any]) -> str:
    return (
        ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items()))
        or NONE
    )


def models_table(rows: Sequence[Mapping[str, Any]]) -> RenderableType:
    if not rows:
        return Text("serving declares no models")
    table = Table(title="models", title_justify="left")
    for column in ("model", "dataset", "champion", "previous", "served"):
        table.add_column(column)
    for row in rows:
        served = _or_none(row["served"])
        if row["served"] is not None and not row["loaded"]:
            served += " (not in memory)"
        lagging = (
            row["served"] is not None and row["champion"] is not None and row["served"] != row["champion"]
        )
        table.add_row(
            row["name"],
            _or_none(row["dataset"]),
            _or_none(row["champion"]),
            _or_none(row["previous"]),
            Text(served, style="yellow" if lagging else ""),
        )
    return table


def _version_rows(table: Table, label: str, info: Mapping[str, Any] | None) -> None:
    if info is None:
        table.add_row(label, NONE)
        return
    table.add_row(label, Text(f"version {info['version']}", style="bold"))
    table.add_row("  metrics", _metrics(info.get("metrics") or {}))
    table.add_row("  run id", _or_none(info.get("run_id")))
    table.add_row("  feature set", _or_none(info.get("feature_set_id")))
    table.add_row("  snapshots", ", ".join(info.get("snapshot_ids") or []) or NONE)


def decision_text(decision: Mapping[str, Any] | None) -> Text:
    if decision is None:
        return Text("no model.promoted or model.rejected event on the streams")
    style = "red" if decision["decision"] == "rejected" else "green"
    text = Text.assemble((decision["decision"], style))
    if decision.get("version"):
        text.append(f" version {decision['version']}")
        if decision.get("previous_version"):
            text.append(f" (was {decision['previous_version']})")
    text.append(f" at {decision['occurred_at']}, event {decision['event_id']}")
    text.append(f", correlation {decision['correlation_id']}")
    for reason in decision.get("reasons") or []:
        text.append(f"\n  - {reason}")
    return text


def model_detail(data: Mapping[str, Any]) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("model", Text(data["name"], style="bold"))
    table.add_row("dataset", _or_none(data.get("dataset")))
    _version_rows(table, "champion", data.get("champion"))
    _version_rows(table, "previous", data.get("previous"))
    serving = data["serving"]
    if serving.get("served"):
        state = f"version {serving.get('version')}" + ("" if serving.get("loaded") else " (not in memory)")
        if serving.get("loaded_at"):
            state += f", loaded {serving['loaded_at']}"
    elif serving.get("declared"):
        state = "declared, no version served yet"
    else:
        state = "not declared by serving"
    table.add_row("serving", state)
    table.add_row("last decision", decision_text(data.get("last_decision")))
    return table


def promotion(result: Mapping[str, Any]) -> Text:
    verb = "rolled back to" if result.get("action") == "rollback" else "promoted"
    text = Text.assemble(
        f"{result['model_name']}: ", (f"{verb} version {result['version']}", "bold green"), " (champion)"
    )
    if result.get("previous_version"):
        text.append(f"; previous: version {result['previous_version']}")
    text.append(f"\nannounced as model.promoted event {result.get('event_id', NONE)}")
    return text


def pruned(data: Mapping[str, Any]) -> RenderableType:
    verb = "would delete" if data["dry_run"] else "deleted"
    table = Table("", "count", title=f"data older than {_when(data['before'])}")
    table.add_row(f"snapshots {verb}", str(len(data["snapshots"])))
    table.add_row(f"feature sets {verb}", str(len(data["feature_sets"])))
    if not data["dry_run"]:
        table.add_row("traces deleted", str(data["traces"]))
    table.add_row("kept: a registered version references it", str(len(data["kept_referenced"])))
    table.add_row("kept: in the newest training window", str(len(data["kept_in_window"])))
    return table


def drift_summary(data: Mapping[str, Any]) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("model", Text(str(data.get("model_name")), style="bold"))
    table.add_row("windows evaluated", str(data.get("windows", 0)))
    table.add_row("labelled rows waiting", str(data.get("labelled_rows_waiting", 0)))
    open_windows = data.get("open_windows") or {}
    table.add_row(
        "open windows", ", ".join(f"version {v}: {n} rows" for v, n in open_windows.items()) or NONE
    )
    table.add_row("references", ", ".join(str(v) for v in data.get("references") or []) or NONE)
    latest = data.get("latest")
    if not latest:
        table.add_row("latest window", "none evaluated yet")
        return table
    decision = latest.get("decision") or {}
    table.add_row(
        "latest window",
        f"version {latest.get('model_version')}: {latest.get('rows')} rows "
        f"({latest.get('labelled_rows')} labelled), {latest.get('started_at')} .. {latest.get('ended_at')}",
    )
    if latest.get("performance") is not None:
        table.add_row(
            str(latest.get("performance_metric")),
            f"{_figure(latest['performance'])} (worse by {_figure(latest.get('performance_drop'))})",
        )
    verdict = Text("retrain", style="bold red") if decision.get("retrain") else Text("no retrain")
    if decision.get("episode_active"):
        verdict.append(", drift episode active", style="yellow")
    table.add_row("decision", verdict)
    table.add_row("fired", ", ".join(decision.get("fired") or []) or NONE)
    reasons = decision.get("reasons") or []
    table.add_row("reasons", Group(*(Text(f"- {r}") for r in reasons)) if reasons else NONE)
    return table


def seen_line(seen: Seen) -> Text:
    """One watched entry: arrival time, stream, event id, correlation id and what it is about."""
    now = datetime.now(UTC).strftime("%H:%M:%S")
    text = Text(f"{now} ", style="dim")
    text.append(f"{seen.stream:<18}", style="bold cyan")
    if seen.event is None:
        text.append(f" entry {seen.entry_id}: unreadable ({seen.error})", style="red")
        return text
    text.append(f" {seen.event.get('event_id', NONE)}")
    text.append(f" corr={seen.event.get('correlation_id', NONE)}", style="dim")
    if seen.event.get("type") not in (None, seen.stream):
        text.append(f" type={seen.event.get('type')}", style="yellow")
    if seen.subject:
        text.append(f" {seen.subject}", style="green")
    return text


def seen_json(seen: Seen) -> str:
    """One watched entry as a JSON line: the stream, the entry id, the event (or the error)."""
    record: dict[str, Any] = {"stream": seen.stream, "entry_id": seen.entry_id}
    record.update({"event": seen.event} if seen.event is not None else {"error": seen.error})
    return json.dumps(record, default=str)


def error(console: Console, message: str, details: Sequence[str] = ()) -> None:
    console.print(Text.assemble(("error: ", "bold red"), message))
    for line in details:
        console.print(Text(f"  {line}"))


# --- dead letters (mesh deadletter) --------------------------------------------------------------------


def _short(text: Any, width: int = 80) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _when(value: Any) -> str:
    """An ISO time to the second, in a listing."""
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return _or_none(value)


def dead_letters(data: Mapping[str, Any]) -> RenderableType:
    """``mesh deadletter list``: the counts per original stream and error kind, then the letters."""
    if not data["total"]:
        return Text("no dead letters")
    counts = Table(title=f"{data['total']} dead letter(s)", title_justify="left")
    for column in ("stream", "error kind", "letters"):
        counts.add_column(column, justify="right" if column == "letters" else "left")
    for row in data["counts"]:
        counts.add_row(_or_none(row["stream"]), row["error_kind"], str(row["count"]))
    title = f"newest {data['shown']} of {data['total']}" if data["shown"] < data["total"] else "letters"
    # Two lines a letter, not a table: ids, streams and times stay whole at any width (the ids are what
    # the other verbs take), and the error wraps under them.
    lines: list[RenderableType] = [Text(title, style="italic")]
    for row in data["letters"]:
        line = Text.assemble(
            (row["id"], "bold"),
            "  ",
            (_or_none(row["stream"]), "cyan"),
            f"  group {_or_none(row['group'])}  attempts {_or_none(row['attempts'])}  {_when(row['when'])}",
        )
        if row["replayed_as"]:
            line.append(f"  replayed as {row['replayed_as']}", style="green")
        lines.append(line)
        lines.append(Padding(Text(_short(row["error"], 300), style="red"), (0, 0, 0, 4)))
    letters = Group(*lines)
    return Group(counts, Text(""), letters)


def dead_letter_detail(data: Mapping[str, Any]) -> RenderableType:
    """``mesh deadletter show``: one letter in full, the original message as written."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="cyan")
    table.add_column()
    table.add_row("letter", Text(data["id"], style="bold"))
    if data.get("problem"):
        table.add_row("unreadable", Text(data["problem"], style="red"))
        return table
    letter = data.get("letter") or {}
    table.add_row("stream", _or_none(data["stream"]))
    table.add_row("group", _or_none(data["group"]))
    table.add_row("entry id there", _or_none(data["message_id"]))
    table.add_row("error", Text(_or_none(data["error"]), style="red"))
    table.add_row("error kind", data["error_kind"])
    table.add_row("attempts", _or_none(data["attempts"]))
    table.add_row("when", _or_none(data["when"]))
    table.add_row("letter event", _or_none(letter.get("event_id")))
    table.add_row("correlation", _or_none(letter.get("correlation_id")))
    table.add_row("caused by", _or_none(letter.get("causation_id")))
    contract = data.get("contract_now")
    table.add_row(
        "contract now",
        Text("passes", style="green") if contract == "passes" else Text(f"fails: {contract}", style="yellow"),
    )
    table.add_row("replayed as", _or_none(data.get("replayed_as")))
    original = data.get("original") or ""
    try:
        shown = json.dumps(json.loads(original), indent=2)
    except ValueError:
        shown = original
    table.add_row("original", Text(shown or "(empty)", style="" if shown else "dim"))
    if shown != original:
        table.add_row("as written", Text(original))
    return table


def replayed(results: Sequence[Mapping[str, Any]]) -> RenderableType:
    """``mesh deadletter replay``: each letter and the entry its original was written as."""
    lines = []
    for result in results:
        if result["entry_id"]:
            lines.append(Text(f"{result['id']} -> {result['stream']} {result['entry_id']}"))
        else:
            lines.append(Text(f"{result['id']}: replayed meanwhile by someone else", style="yellow"))
    return Group(*lines) if lines else Text("nothing to replay")


_HEALTH_STYLE = {"ready": "green", "not ready": "yellow", "unreachable": "red"}


def mesh_status(data: Mapping[str, Any]) -> RenderableType:
    """``mesh status``: services, streams and their groups, dead letters, models."""
    services = Table("service", "state", "replicas", Column("url", overflow="fold"), title="services")
    for row in data["services"]:
        state = Text(row["state"], style=_HEALTH_STYLE.get(row["state"], ""))
        if row.get("detail") and row["state"] != "unreachable":
            state.append(f" {_short(row['detail'], 40)}")
        services.add_row(row["service"], state, _or_none(row.get("replicas")), row["url"])
    streams = Table("stream", "length", "group", "replicas", "lag", "pending", title="streams")
    for row in data["streams"]:
        pending = Text(str(row["pending"]), style="yellow" if row["pending"] else "")
        lag = row["lag"]
        streams.add_row(
            row["stream"],
            str(row["length"]),
            _or_none(row["group"]),
            str(row["replicas"]),
            Text(_or_none(lag), style="yellow" if lag else ""),
            pending,
        )
    models = Table("model", "dataset", "champion", "served", "last decision", title="models")
    for row in data["models"]:
        models.add_row(
            row["name"],
            _or_none(row.get("dataset")),
            _or_none(row.get("champion")),
            _or_none(row.get("served")),
            decision_text(row.get("last_decision")),
        )
    dead = data["dead_letters"]
    footer = Text(f"dead letters: {dead}", style="red" if dead else "green")
    if dead:
        footer.append("  (mesh deadletter list)")
    if data.get("models_error"):
        footer.append(f"\nmodels: {data['models_error']}", style="red")
    return Group(services, streams, models, footer)
