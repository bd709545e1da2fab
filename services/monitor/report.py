"""The drift report a person opens: per drifted feature, reference vs current distribution; below,
each test's score over the last windows against its fire threshold."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from services.monitor.models import MonitoredModel
    from services.monitor.windows import WindowResult

FEATURES_SHOWN = 6


def _figure(width: float, height: float) -> Figure:
    """A blank chart. matplotlib's object API (no pyplot global state, no display), imported here: only a
    person opening a report needs it, and it would hold ~30 MB in every idle monitor."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _worst(scores: dict[str, dict[str, float]]) -> list[str]:
    def psi(feature: str) -> float:
        value = scores[feature].get("psi", 0.0)
        return value if math.isfinite(value) else 0.0

    return sorted(scores, key=psi, reverse=True)[:FEATURES_SHOWN]


def _distribution_chart(feature: str, distribution: dict[str, Any], scores: dict[str, float]) -> str:
    labels = [str(label) for label in distribution["labels"]]
    positions = range(len(labels))
    figure = _figure(6.5, 2.6)
    axis = figure.subplots()
    width = 0.4
    axis.bar(
        [p - width / 2 for p in positions], distribution["reference"], width, label="reference (training)"
    )
    axis.bar([p + width / 2 for p in positions], distribution["current"], width, label="current window")
    axis.set_xticks(list(positions), labels, rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("share")
    title = ", ".join(f"{test} {value:.3f}" for test, value in scores.items() if math.isfinite(value))
    axis.set_title(f"{feature}: {title}", fontsize=9)
    axis.legend(fontsize=7)
    return _png(figure)


def _history_chart(model: MonitoredModel, history: list[WindowResult]) -> str:
    figure = _figure(8, 3)
    axis = figure.subplots()
    x = range(len(history))
    # A window judged on labels alone has no drift scores: a gap in the line, not a zero.
    max_psi = [max((t.get("psi", 0.0) for t in r.scores.values()), default=math.nan) for r in history]
    max_ks = [max((t.get("ks", 0.0) for t in r.scores.values()), default=math.nan) for r in history]
    drops = [r.performance_drop if r.performance_drop is not None else float("nan") for r in history]
    axis.plot(x, max_psi, marker="o", label="max PSI")
    axis.plot(x, max_ks, marker="s", label="max KS")
    axis.plot(x, drops, marker="^", label=f"{model.config.performance.metric} worse by")
    drift = model.config.drift
    axis.axhline(drift.psi.fire, color="C0", linestyle="--", linewidth=0.8)
    axis.axhline(drift.ks.fire, color="C1", linestyle="--", linewidth=0.8)
    axis.axhline(model.config.performance.max_drop.fire, color="C2", linestyle="--", linewidth=0.8)
    for i, result in enumerate(history):
        if result.decision.retrain:
            axis.axvline(i, color="red", alpha=0.4)
    axis.set_xlabel("window")
    axis.set_title("scores per window (dashed: fire thresholds; red: retrain requested)", fontsize=9)
    axis.legend(fontsize=7)
    return _png(figure)


def render_report(model: MonitoredModel, history: list[WindowResult]) -> str:
    """The report of ``model`` over its kept window results, oldest first."""
    name = html.escape(model.name)
    if not history:
        return f"<html><body><h1>Drift report: {name}</h1><p>No window evaluated yet.</p></body></html>"
    latest = history[-1]
    rows = (
        "".join(f"<li>{html.escape(reason)}</li>" for reason in latest.decision.reasons)
        or "<li>no reasons recorded</li>"
    )
    scored = next((r for r in reversed(history) if r.distributions), None)
    charts = (
        f"<p>From the window ending {html.escape(scored.ended_at)} (model version "
        f"{html.escape(scored.model_version)}).</p>"
        + "".join(
            f'<img alt="{html.escape(f)}" src="data:image/png;base64,'
            f'{_distribution_chart(f, scored.distributions[f], scored.scores[f])}"/>'
            for f in _worst(scored.scores)
            if f in scored.distributions
        )
        if scored is not None
        else "<p>No window with enough predictions yet.</p>"
    )
    performance = "n/a" if latest.performance is None else f"{latest.performance:.3f}"
    return f"""<html><head><title>Drift report: {name}</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{margin:.5em;border:1px solid #ddd}}</style></head>
<body>
<h1>Drift report: {name}</h1>
<p>Latest window: model version {html.escape(latest.model_version)}, {latest.rows} predictions,
{latest.labelled_rows} labelled ({html.escape(latest.performance_metric)} {performance}),
{html.escape(latest.started_at)} to {html.escape(latest.ended_at)}.</p>
<p>Decision: <b>{"retrain" if latest.decision.retrain else "hold"}</b>;
fired: {html.escape(", ".join(latest.decision.fired) or "none")}</p>
<ul>{rows}</ul>
<h2>Score history</h2>
<img alt="history" src="data:image/png;base64,{_history_chart(model, history)}"/>
<h2>Most drifted features: reference vs current</h2>
{charts}
</body></html>"""
