"""The report: files exist, each PNG decodes and is not blank, the page references them."""

import json

import numpy as np
import pytest

from connectors.admin import create_topics, produce
from flink_jobs.report import PLOTS, select_run, write_report
from operators.evaluation import DEAD_LETTER_COUNT, Prequential
from tests.cli_helpers import streamshard


def metric_docs(run: str, tasks=("ctr", "fraud"), batches=40) -> list[dict]:
    """What the evaluator writes for a run: windows, cumulative records, counters."""
    rng = np.random.default_rng(5)
    docs = []
    evals = {t: Prequential(t, window=500) for t in tasks}
    for b in range(batches):
        for _task, ev in evals.items():
            labels = rng.random(100) < 0.2
            scores = np.clip(labels * 0.3 + rng.random(100) * 0.7, 0, 1)
            for w in ev.add(labels.astype(int), scores, version=b * 4, staleness=b % 3):
                docs.append({**w, "run": run, "time": 1000 * b})
            docs.append({**ev.cumulative(), "run": run, "time": 1000 * b + 10})
        docs.append(
            {"type": "counter", "name": DEAD_LETTER_COUNT, "count": b, "run": run, "time": 1000 * b}
        )
    return docs


def check_report(out):
    from matplotlib.image import imread

    page = (out / "index.html").read_text()
    for name in PLOTS:
        assert f'src="{name}.png"' in page
        pixels = imread(out / f"{name}.png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert float(pixels[..., :3].std()) > 0.01, f"{name}.png is blank"
    return page


def test_report_files_decode_and_are_referenced(tmp_path):
    docs = metric_docs("r-old", tasks=("ctr",), batches=5) + metric_docs("r-new")
    page = check_report(write_report(docs, tmp_path).parent)
    assert "r-new" in page and "r-old" not in page  # the newest run by default
    assert "<td>fraud</td>" in page and "<td>4,000</td>" in page  # 40 batches of 100


def test_drift_alerts_are_listed_and_a_calm_run_says_none(tmp_path):
    docs = metric_docs("r1")
    assert not [d for d in docs if d["type"] == "drift"]  # a stationary stream: no alert
    page = check_report(write_report(docs, tmp_path / "calm").parent)
    assert "no drift detected" in page
    alert = {"type": "drift", "task": "ctr", "count": 107_000, "model_version": 321,
             "detector": "page-hinkley", "chunk": 500, "run": "r1", "time": 5}  # fmt: skip
    page = check_report(write_report([*docs, alert], tmp_path / "drift").parent)
    assert "task ctr: the log loss rose; detected at prediction 107,000, model version 321" in page


def test_select_run_names_the_runs_when_the_asked_one_is_missing():
    with pytest.raises(Exception, match="runs seen: \\['a'\\]"):
        select_run([{"type": "counter", "run": "a"}], "b")


@pytest.mark.kafka
def test_report_command_reads_the_metrics_topic(kafka, topic_name, tmp_path):
    create_topics(kafka, [topic_name])
    produce(kafka, topic_name, [(None, json.dumps(d).encode()) for d in metric_docs("r1")])
    out = streamshard(
        "report",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--metrics-topic",
        topic_name,
        "--out",
        str(tmp_path / "rep"),
        "--idle",
        "1",
    )
    assert out.returncode == 0, out.stderr
    check_report(tmp_path / "rep")


def test_report_shows_settings_truth_serving_and_plain_names(tmp_path):
    settings = {"consistency": "bounded:2", "workers": 2, "shards": 4, "max_in_flight": 64}
    docs = [{"type": "settings", "run": "r1", "time": 0, "settings": settings}]
    docs += metric_docs("r1", tasks=("ctr",))
    serving = {
        "requests": 300,
        "predictions": 300,
        "dead_letters": 0,
        "auc": 0.8123,
        "latency_ms": {"p50": 12.0, "p95": 40.0, "p99": 95.0},
        "seconds": 10.0,
        "ts_out_of_range": 3,
        "model_age_ms": {"p50": 850.0, "p99": 2100.0},
        "latency_over_time": [
            {"from_s": 0.0, "predictions": 200, "p50": 11.0, "p99": 90.0},
            {"from_s": 10.0, "predictions": 100},
        ],
    }
    # fmt: skip
    page = check_report(write_report(docs, tmp_path, truth={"auc": 0.85, "log_loss": 0.24},
                                     serving=serving).parent)  # fmt: skip
    assert "<td>true model</td><td></td><td>0.8500</td><td>0.2400</td>" in page
    assert "<h2>Serving</h2>" in page and "0.8123" in page and "12 / 40 / 95" in page
    assert "850 / 2,100" in page and "11 / 90" in page and ">30<" in page  # age, over time, /s
    assert "from 10 s (100 predictions)" in page
    assert "<th>consistency</th><td>bounded:2</td>" in page
    assert (
        "from the first to the last prediction" in page
    )  # the one throughput figure says what it is
    assert "__" not in page  # no internal counter names
    assert "calibration.png" in page


def test_staleness_bound_is_the_mode_s_own():
    from flink_jobs.report import staleness_bound

    assert staleness_bound({"consistency": "sync"}) == ("bound: 0 (sync)", 0.0)
    assert staleness_bound({"consistency": "bounded:3", "max_in_flight": 64})[1] == 3.0
    assert staleness_bound({"consistency": "async", "max_in_flight": 16})[1] == 16.0
    assert staleness_bound({}) is None


def test_calibration_sums_over_windows(tmp_path):
    from operators.metrics import calibration

    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.1, 0.15, 0.55, 0.6, 0.99])
    cal = calibration(y, s)
    assert sum(cal["count"]) == 5 and cal["count"][1] == 2 and cal["positives"][5] == 1
    assert cal["positives"][9] == 1 and abs(sum(cal["score_sum"]) - s.sum()) < 1e-9
