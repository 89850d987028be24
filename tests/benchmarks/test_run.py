"""The harness's verdicts: what counts as met or missed (no runs, no JVM)."""

from benchmarks.end_to_end import end_to_end_configs
from benchmarks.run import auc_flags, learner_targets, table, targets
from benchmarks.usage import kind, per_event_us


def _e2e(label, events, steady, auc, **extra):
    return {
        "label": label,
        "events": events,
        "events_per_s": steady * 0.9,
        "steady_events_per_s": steady,
        "auc": auc,
        "peak_rss_mib": extra.pop("peak", 2000.0),
        "staleness": {"p50": 5, "p90": 7, "max": 9},
        "update_records_per_event": 0.01,
        "update_bytes_per_event": extra.pop("bytes", 100.0),
        "cpu_us_per_event": {"jvm": 300.0, "python": 200.0, "broker": 50.0, "other": 0.0},
        **extra,
    }


SERVICE = {"name": "service (confluent-kafka)", "events": 100_000, "events_per_s": 30_000.0,
           "auc": 0.82, "peak_rss_mib": 300.0}  # fmt: skip


def test_headline_trains_on_the_whole_stream_and_the_rest_on_the_prefix():
    configs = end_to_end_configs(quick=True, events=100_000, prefix=10_000)
    head = [c for c in configs if c.get("headline")]
    assert len(head) == 1 and head[0]["events"] == 100_000
    assert (head[0]["workers"], head[0]["shards"], head[0]["consistency"]) == (2, 4, "async")
    one = [c for c in configs if c.get("one_sync")]
    assert len(one) == 1 and (one[0]["workers"], one[0]["shards"]) == (1, 1)
    assert one[0]["events"] == 100_000  # the sync run: past its warm-up, capped at 200,000
    batched = [c for c in configs if c.get("batched")]
    assert len(batched) == 1 and batched[0]["events"] == 100_000  # the whole stream, batched
    rest = [c for c in configs if not c.get("headline") and not c.get("batched")]
    pair = [c for c in rest if c.get("filter_base") or c.get("eps")]
    # whole mini-batches of 1,000 after the warm-up's 8,306 events: no partial one is left
    assert len(pair) == 2 and all(c["events"] == 19_306 for c in pair)
    # the KKT pair: longer, unstandardized, with L1, the filter on in one
    kkt = [c for c in rest if c.get("kkt_base") or c.get("kkt")]
    assert [c.get("kkt", False) for c in kkt] == [False, True]
    assert all(c["events"] == 99_306 and c["l1"] > 0 for c in kkt)
    assert all(c["events"] == 10_000 for c in rest if c not in pair + one + kkt)
    full = end_to_end_configs(quick=False, events=1_000_000, prefix=20_000)
    assert next(c for c in full if c.get("one_sync"))["events"] == 200_000
    assert len(full) == len(configs) + 11  # the grid: 2 x 2 x 3 less the 1w 1s sync run
    assert len({c["label"] for c in full}) == len(full)


def test_throughput_verdicts_name_the_target_and_the_service_and_say_by_how_much():
    e2e = [
        _e2e("head", 100_000, 5_000.0, 0.8150, headline=True),
        _e2e("one", 10_000, 16_000.0, 0.7100, one_sync=True),
        _e2e("plain", 10_000, 500.0, 0.7100, filter_base=True, bytes=130.0),
        _e2e("filtered", 10_000, 500.0, 0.7090, eps=0.003, bytes=60.0),
    ]
    text = "\n".join(targets(e2e, [SERVICE], {"auc": 0.8200}, {"auc": 0.71}))
    assert "0.167 of the consumer service" in text
    assert "MISSED 20,000/s by 4.0x, the service by 6.0x" in text
    assert "gap +0.0050" in text and "MISSED by 0.0030" in text
    assert "1 worker, 1 shard, sync" in text and "16,000 events/s steady" in text
    assert "0.46 of it" in text and "cost +0.0010" in text and text.endswith("met.")


def test_a_met_target_says_met_and_memory_is_checked():
    e2e = [_e2e("head", 100_000, 40_000.0, 0.8190, headline=True, peak=4000.0)]
    lines = targets(e2e, [SERVICE], {"auc": 0.8200}, {"auc": 0.71})
    assert lines[0].endswith("met.") and "1.333 of the consumer service" in lines[0]
    assert "within 0.002: met" in lines[1]
    assert "4,000 MiB" in lines[2] and "MISSED by 928 MiB" in lines[2]


def test_the_learner_must_reach_0_8_of_a_ceiling_of_300k():
    single = [{"name": "ceiling", "events_per_s": 400_000.0}]
    bench = {"rows": [{"batch": 10, "ratio": 0.9}, {"batch": 100, "ratio": 0.75}]}
    lines = learner_targets(single, bench)
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["met.", "MISSED by 0.05."]
    assert "0.75 of the ceiling" in lines[1]


def test_a_contender_far_below_the_best_auc_on_the_same_events_is_flagged():
    rows = [{"name": "a", "events": 10, "auc": 0.80}, {"name": "b", "events": 10, "auc": 0.74},
            {"name": "c", "events": 5, "auc": 0.70}]  # fmt: skip
    assert auc_flags(rows) == {"b"}
    ceiling = {"name": "ceiling", "events": 10, "events_per_s": 1e5, "auc": 0.8, "peak_rss_mib": 1}
    text = table([ceiling, rows[1] | {"events_per_s": 1.0, "peak_rss_mib": 1.0}], [], [], ceiling)
    assert "0.7400 **(AUC > 0.05 below the best)**" in text


def test_processes_are_told_apart_by_name():
    assert [kind(c) for c in ("java", "python3.11", "streamshard", "tansu")] == [
        "jvm", "python", "python", "other"]  # fmt: skip
    assert per_event_us({"jvm": 2.0}, 1_000_000) == {"jvm": 2.0}
