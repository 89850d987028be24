"""``streamshard report``: an HTML page with plots of a training run's metrics stream.

Reads the ``metrics`` topic (window, cumulative and counter records of one run; by default
the newest run on the topic) and writes ``index.html`` with PNG plots (matplotlib, no
display needed) of AUC and log loss per window against the model version, throughput and
staleness over time, dead letters and rejected pushes, and a table of the final figures.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from connectors.errors import StreamshardError
from operators.evaluation import DEAD_LETTER_COUNT, REJECTED_COUNT

PLOTS = ("auc", "log_loss", "throughput", "staleness", "dead_letters")
TABLE_FIELDS = (
    ("count", "events", "{:,}"),
    ("auc", "AUC", "{:.4f}"),
    ("log_loss", "log loss", "{:.4f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("mean_score", "mean score", "{:.4f}"),
    ("positive_rate", "positive rate", "{:.4f}"),
    ("staleness_max", "staleness max", "{}"),
    ("model_version", "model version", "{:,}"),
    ("events_per_s", "events/s", "{:,.0f}"),
)


def select_run(docs: list[dict], run: str | None = None) -> tuple[str, list[dict]]:
    """The records of ``run`` (default: the run of the newest record that names one)."""
    runs = [d.get("run") for d in docs if d.get("run")]
    if run is None:
        if not runs:
            raise StreamshardError("no metrics records that name their run")
        run = runs[-1]
    mine = [d for d in docs if d.get("run") == run]
    if not mine:
        raise StreamshardError(
            f"no metrics records of run {run!r} (runs seen: {sorted(set(runs))})"
        )
    return run, mine


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def _save(plt, fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _by_task(docs: list[dict], kind: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in docs:
        if doc.get("type") == kind:
            out.setdefault(doc["task"], []).append(doc)
    return out


def _metric_plot(out: Path, name: str, label: str, windows: dict, cumulative: dict) -> None:
    plt, fig, ax = _figure()
    for task, docs in sorted(windows.items()):
        docs = sorted(docs, key=lambda d: d["end"])
        ax.plot(
            [d["model_version"] for d in docs],
            [d[name] for d in docs],
            marker="o",
            ms=3,
            label=f"{task}: per window",
        )
    for task, docs in sorted(cumulative.items()):
        docs = sorted(docs, key=lambda d: d["count"])
        ax.plot(
            [d["model_version"] for d in docs],
            [d[name] for d in docs],
            ls="--",
            label=f"{task}: cumulative",
        )
    _save(plt, fig, ax, out / f"{name}.png", f"{label} by model version", "model version", label)


def _time_plot(out: Path, name: str, title: str, ylabel: str, series: dict) -> None:
    plt, fig, ax = _figure()
    t0 = min((t for points in series.values() for t, _ in points), default=0)
    for label, points in sorted(series.items()):
        points = sorted(points)
        ax.plot(
            [(t - t0) / 1000 for t, _ in points], [v for _, v in points], marker=".", label=label
        )
    if not series:
        ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes)
    _save(plt, fig, ax, out / f"{name}.png", title, "seconds since the first record", ylabel)


def _rate(docs: list[dict]) -> list[tuple[int, float]]:
    """Events/s between successive cumulative records of a task."""
    docs = sorted(docs, key=lambda d: d["time"])
    points = []
    for a, b in zip(docs, docs[1:], strict=False):
        if b["time"] > a["time"]:
            points.append((b["time"], (b["count"] - a["count"]) * 1000 / (b["time"] - a["time"])))
    return points


def final_figures(docs: list[dict]) -> tuple[dict[str, dict], dict[str, int]]:
    """The last cumulative record of each task, and each counter's total."""
    final: dict[str, dict] = {}
    for doc in docs:
        if doc.get("type") == "cumulative":
            if doc["task"] not in final or doc["count"] >= final[doc["task"]]["count"]:
                final[doc["task"]] = doc
    counters: dict[str, int] = {}
    for doc in docs:
        if doc.get("type") == "counter":
            counters[doc["name"]] = max(counters.get(doc["name"], 0), doc["count"])
    return final, counters


def write_report(docs: list[dict], out: str | Path, run: str | None = None) -> Path:
    """Write ``index.html`` and its PNGs under ``out``; return the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run, docs = select_run(docs, run)
    windows, cumulative = _by_task(docs, "window"), _by_task(docs, "cumulative")
    _metric_plot(out, "auc", "AUC", windows, cumulative)
    _metric_plot(out, "log_loss", "log loss", windows, cumulative)
    _time_plot(
        out, "throughput", "throughput", "events/s", {t: _rate(d) for t, d in cumulative.items()}
    )
    staleness = {}
    for task, task_docs in cumulative.items():
        staleness[f"{task}: max"] = [(d["time"], d["staleness_max"]) for d in task_docs]
        staleness[f"{task}: mean"] = [(d["time"], d["staleness_mean"]) for d in task_docs]
    _time_plot(out, "staleness", "staleness (own pushes not yet seen)", "mini-batches", staleness)
    counts: dict[str, list] = {}
    for doc in docs:
        if doc.get("type") == "counter":
            counts.setdefault(doc["name"], []).append((doc["time"], doc["count"]))
    _time_plot(out, "dead_letters", "dead letters and rejected pushes", "count", counts)
    page = out / "index.html"
    page.write_text(_html(run, *final_figures(docs)))
    return page


def _cell(fmt: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def _html(run: str, final: dict[str, dict], counters: dict[str, int]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in TABLE_FIELDS)
    rows = "".join(
        f"<tr><td>{html.escape(task)}</td>"
        + "".join(f"<td>{_cell(fmt, doc.get(key))}</td>" for key, _, fmt in TABLE_FIELDS)
        + "</tr>"
        for task, doc in sorted(final.items())
    )
    counter_rows = "".join(
        f"<li>{html.escape(name)}: {counters.get(name, 0):,}</li>"
        for name in (DEAD_LETTER_COUNT, REJECTED_COUNT)
    )
    images = "".join(
        f'<figure><img src="{name}.png" alt="{name}"><figcaption>{name}</figcaption></figure>'
        for name in PLOTS
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>streamshard report: {html.escape(run)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}figure{{display:inline-block}}
</style></head><body>
<h1>streamshard report</h1><p>run <code>{html.escape(run)}</code></p>
<h2>Final figures (prequential, cumulative)</h2>
<table><tr><th>task</th>{head}</tr>{rows}</table>
<ul>{counter_rows}</ul>
<h2>Plots</h2>{images}
</body></html>
"""


def read_metrics(kafka, topic: str, idle: float = 3.0) -> list[dict]:
    from connectors.admin import read_records

    docs = []
    for record in read_records(kafka, topic, idle=idle):
        try:
            doc = json.loads(record.value)
        except ValueError:
            continue
        if isinstance(doc, dict) and "type" in doc:
            docs.append(doc)
    if not docs:
        raise StreamshardError(f"no metrics records on topic {topic!r}")
    return docs
