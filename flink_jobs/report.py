"""``streamshard report``: an HTML page with plots of a training run's metrics stream.

Reads the ``metrics`` topic (window, cumulative and counter records of one run; by default
the newest run on the topic) and writes ``index.html`` with PNG plots (matplotlib, no
display needed) of AUC and log loss per window against the model version (with the true
model's figures when the stream is synthetic), calibration, throughput and staleness over
time (with the run's staleness bound), dead letters and rejected pushes, a table of the final
figures, the run's settings and, when given, the results of a serving run.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from connectors.errors import StreamshardError
from operators.drift import DRIFT_DONE
from operators.evaluation import DEAD_LETTER_COUNT, REJECTED_COUNT, metric_text

PLOTS = ("auc", "log_loss", "calibration", "throughput", "staleness", "dead_letters")
COUNTER_LABELS = {DEAD_LETTER_COUNT: "dead letters", REJECTED_COUNT: "rejected pushes"}
SETTINGS_SHOWN = ("engine", "consistency", "workers", "shards", "batch_size", "batch_timeout_ms",
                  "ingest_window_ms", "max_in_flight", "read_my_writes", "optimizer", "hyper",
                  "bits", "window", "input_topic", "max_events", "run_id")  # fmt: skip
THROUGHPUT_MEANS = (
    "events/s: predictions counted by the evaluator divided by the time from the first to the "
    "last prediction (the job's start-up is not included)"
)
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
    ("pushed_per_event", "pushed coordinates/event", "{:.2f}"),
    ("model_version", "model version", "{:,}"),
    ("events_per_s", "events/s *", "{:,.0f}"),
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


def _metric_plot(out: Path, name: str, label: str, windows: dict, cumulative: dict,
                 truth: float | None = None, drifts: list | None = None) -> None:  # fmt: skip
    plt, fig, ax = _figure()
    for i, doc in enumerate(drifts or []):  # where the loss rose (operators/drift.py)
        ax.axvline(doc["model_version"], color="red", lw=1, ls="-.",
                   label="drift detected" if i == 0 else None)  # fmt: skip
    for task, docs in sorted(windows.items()):
        docs = sorted(docs, key=lambda d: d["end"])
        size = docs[0]["end"] - docs[0]["start"]
        ax.plot(
            [d["model_version"] for d in docs],
            [d[name] for d in docs],
            marker="o",
            ms=3 if len(docs) > 3 else 7,
            label=f"{task}: per window of {size:,} ({len(docs)} windows)",
        )
    for task, docs in sorted(cumulative.items()):
        docs = sorted(docs, key=lambda d: d["count"])
        ax.plot(
            [d["model_version"] for d in docs],
            [d[name] for d in docs],
            ls="--",
            label=f"{task}: cumulative",
        )
    if truth is not None:
        ax.axhline(truth, color="black", lw=1, ls=":", label=f"true model: {truth:.4f}")
    _save(plt, fig, ax, out / f"{name}.png", f"{label} by model version", "model version", label)


def _calibration_plot(out: Path, windows: dict) -> None:
    """Mean score against positive rate per score bin, over every window of each task."""
    plt, fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="black", lw=1, ls=":", label="perfectly calibrated")
    for task, docs in sorted(windows.items()):
        cal = [d["calibration"] for d in docs if "calibration" in d]
        if not cal:
            continue
        count, score, pos = (np.sum([c[k] for c in cal], axis=0)
                             for k in ("count", "score_sum", "positives"))  # fmt: skip
        seen = count > 0
        ax.plot(score[seen] / count[seen], pos[seen] / count[seen], marker="o",
                label=f"{task} ({int(count.sum()):,} predictions)")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _save(plt, fig, ax, out / "calibration.png", "calibration (all windows)",
          "mean predicted score in the bin", "positive rate in the bin")  # fmt: skip


def _time_plot(out: Path, name: str, title: str, ylabel: str, series: dict,
               bound: tuple[str, float] | None = None) -> None:  # fmt: skip
    plt, fig, ax = _figure()
    t0 = min((t for points in series.values() for t, _ in points), default=0)
    for label, points in sorted(series.items()):
        points = sorted(points)
        ax.plot(
            [(t - t0) / 1000 for t, _ in points], [v for _, v in points], marker=".", label=label
        )
    if bound is not None:
        ax.axhline(bound[1], color="black", lw=1, ls=":", label=bound[0])
    if not series:
        ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes)
    _save(plt, fig, ax, out / f"{name}.png", title, "seconds since the first record", ylabel)


def staleness_bound(settings: dict) -> tuple[str, float] | None:
    """The line a staleness plot is judged against: TAU of bounded:TAU, else the flow-control
    limit (``--max-in-flight``) that bounds every mode.

    >>> staleness_bound({"consistency": "bounded:2", "max_in_flight": 64})
    ('bound: TAU = 2', 2.0)
    >>> staleness_bound({"consistency": "async", "max_in_flight": 64})
    ('bound: --max-in-flight 64', 64.0)
    """
    mode = str(settings.get("consistency", ""))
    if mode.startswith("bounded:"):
        return f"bound: TAU = {mode[8:]}", float(mode[8:])
    if mode == "sync":
        return "bound: 0 (sync)", 0.0
    if settings.get("max_in_flight"):
        return f"bound: --max-in-flight {settings['max_in_flight']}", float(
            settings["max_in_flight"]
        )
    return None


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


def write_report(docs: list[dict], out: str | Path, run: str | None = None,
                 truth: dict | None = None, serving: dict | None = None) -> Path:  # fmt: skip
    """Write ``index.html`` and its PNGs under ``out``; return the page's path.

    ``truth``: the true model's ``auc`` and ``log_loss`` (``generate --truth``); ``serving``:
    a serving run's summary (``serve --summary-json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run, docs = select_run(docs, run)
    settings = next((d["settings"] for d in reversed(docs) if d.get("type") == "settings"), {})
    windows, cumulative = _by_task(docs, "window"), _by_task(docs, "cumulative")
    drifts = sorted((d for d in docs if d.get("type") == "drift"),
                    key=lambda d: (d["task"], d["count"]))  # fmt: skip
    truth = truth or {}
    _metric_plot(out, "auc", "AUC", windows, cumulative, truth.get("auc"), drifts)
    _metric_plot(out, "log_loss", "log loss", windows, cumulative, truth.get("log_loss"), drifts)
    _calibration_plot(out, windows)
    _time_plot(out, "throughput", "throughput between metrics records", "events/s",
               {t: _rate(d) for t, d in cumulative.items()})  # fmt: skip
    staleness = {}
    for task, task_docs in cumulative.items():
        staleness[f"{task}: max so far"] = [(d["time"], d["staleness_max"]) for d in task_docs]
        staleness[f"{task}: mean so far"] = [(d["time"], d["staleness_mean"]) for d in task_docs]
    _time_plot(out, "staleness", "staleness: own mini-batches not yet reflected",
               "mini-batches", staleness, staleness_bound(settings))  # fmt: skip
    counts: dict[str, list] = {}
    for doc in docs:
        if doc.get("type") == "counter":
            label = COUNTER_LABELS.get(doc["name"], doc["name"])
            counts.setdefault(label, []).append((doc["time"], doc["count"]))
    times = [d["time"] for d in docs if "time" in d]
    for label in COUNTER_LABELS.values():  # a counter that never moved is a flat zero line
        if label not in counts and times:
            counts[f"{label}: none"] = [(min(times), 0), (max(times), 0)]
    _time_plot(out, "dead_letters", "dead letters and rejected pushes (totals)", "count", counts)
    page = out / "index.html"
    page.write_text(_html(run, *final_figures(docs), settings, truth, serving, drifts))
    return page


def _html(run: str, final: dict[str, dict], counters: dict[str, int], settings: dict,
          truth: dict, serving: dict | None, drifts: list) -> str:  # fmt: skip
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in TABLE_FIELDS)
    rows = "".join(
        f"<tr><td>{html.escape(task)}</td>"
        + "".join(f"<td>{metric_text(fmt, doc.get(key))}</td>" for key, _, fmt in TABLE_FIELDS)
        + "</tr>"
        for task, doc in sorted(final.items())
    )
    if truth:
        auc, loss = (metric_text("{:.4f}", truth.get(k)) for k in ("auc", "log_loss"))
        rows += (f"<tr><td>true model</td><td></td><td>{auc}</td><td>{loss}</td>"
                 + "<td></td>" * (len(TABLE_FIELDS) - 3) + "</tr>")  # fmt: skip
    counter_rows = "".join(
        f"<li>{html.escape(label)}: {counters.get(name, 0):,}</li>"
        for name, label in COUNTER_LABELS.items()
    )
    shown = [(k, settings[k]) for k in SETTINGS_SHOWN if k in settings]
    settings_rows = (
        "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in shown
        )
        or "<tr><td>not recorded for this run</td></tr>"
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
<p>* {html.escape(THROUGHPUT_MEANS)}</p>
<ul>{counter_rows}</ul>
{_drift_html(drifts)}
{_serving_html(serving)}
<h2>Settings</h2><table>{settings_rows}</table>
<h2>Plots</h2>{images}
</body></html>
"""


def _drift_html(drifts: list) -> str:
    """The drift alerts: Page-Hinkley on each task's prequential log loss."""
    if not drifts:
        return "<h2>Drift</h2><p>no drift detected (Page-Hinkley on the log loss)</p>"
    items = "".join(
        f"<li>task {html.escape(d['task'])}: the log loss rose; detected at prediction "
        f"{d['count']:,}, model version {d['model_version']:,}"
        f"{html.escape(DRIFT_DONE.get(d.get('action'), ''))}</li>"
        for d in drifts
    )
    return f"<h2>Drift</h2><ul>{items}</ul>"


def _serving_html(serving: dict | None) -> str:
    if not serving:
        return ""
    lat = serving.get("latency_ms") or {}
    items = [
        ("requests", f"{serving.get('requests', 0):,}"),
        ("predictions", f"{serving.get('predictions', 0):,}"),
        ("dead letters", f"{serving.get('dead_letters', 0):,}"),
        ("latency p50 / p95 / p99 (ms), request ts to prediction",
         " / ".join(metric_text("{:,.0f}", lat.get(k)) for k in ("p50", "p95", "p99"))),
    ]  # fmt: skip
    if serving.get("seconds"):
        items.append(("predictions/s (job's whole run)",
                      f"{serving.get('predictions', 0) / serving['seconds']:,.0f}"))  # fmt: skip
    if serving.get("ts_out_of_range"):
        items.append(("answered with ts out of range (no latency)",
                      f"{serving['ts_out_of_range']:,}"))  # fmt: skip

    def p50_p99(d: dict) -> str:
        return " / ".join(metric_text("{:,.0f}", d.get(k)) for k in ("p50", "p99"))

    if serving.get("model_age_ms"):
        items.append(("model age p50 / p99 (ms since its newest update)",
                      p50_p99(serving["model_age_ms"])))  # fmt: skip
    for window in serving.get("latency_over_time") or []:
        items.append((f"latency p50 / p99 (ms) from {window['from_s']:.0f} s "
                      f"({window['predictions']:,} predictions)", p50_p99(window)))  # fmt: skip
    if serving.get("auc") is not None:
        items.append(("AUC of the served predictions", f"{serving['auc']:.4f}"))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f"<h2>Serving</h2><table>{rows}</table>"


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
