"""The harness's verdicts: what counts as met or missed (no runs, no JVM)."""

from benchmarks.run import end_to_end_configs, targets


def _e2e(label, events, steady, auc, **extra):
    return {
        "label": label,
        "events": events,
        "events_per_s": steady * 0.9,
        "steady_events_per_s": steady,
        "auc": auc,
        "staleness": {"p50": 5, "max": 9},
        "update_bytes_per_event": extra.pop("bytes", 100.0),
        **extra,
    }


def test_headline_trains_on_the_whole_stream_and_the_rest_on_the_prefix():
    configs = end_to_end_configs(quick=True, events=100_000, prefix=10_000)
    head = [c for c in configs if c.get("headline")]
    assert len(head) == 1 and head[0]["events"] == 100_000
    assert head[0]["workers"] == 2 and head[0]["shards"] == 4
    assert head[0]["consistency"] == "async"
    rest = [c for c in configs if not c.get("headline")]
    pair = [c for c in rest if c.get("filter_base") or c.get("eps")]
    assert len(pair) == 2 and all(c["events"] == 20_000 for c in pair)
    assert all(c["events"] == 10_000 for c in rest if c not in pair)
    full = end_to_end_configs(quick=False, events=1_000_000, prefix=20_000)
    assert len(full) == len(configs) + 12  # the grid: 2 x 2 x 3


def test_verdicts_compare_like_with_like_and_say_by_how_much():
    river = {"events_per_s": 1000.0, "events": 100_000}
    ceiling = {"auc": 0.8200, "events": 100_000}
    prefix = {"auc": 0.7100, "events": 10_000}
    e2e = [
        _e2e("head", 100_000, 800.0, 0.8150, headline=True, auc_prefix=0.69),
        _e2e("plain", 10_000, 500.0, 0.7100, filter_base=True, bytes=130.0),
        _e2e("filtered", 10_000, 500.0, 0.7090, eps=0.003, bytes=60.0),
    ]
    text = "\n".join(targets(e2e, river, ceiling, prefix))
    assert "ratio 0.80 steady" in text and "MISSED by 25%" in text
    assert "gap +0.0050" in text and "MISSED by 0.0030" in text
    assert "first 10,000 events alone 0.6900" in text
    assert "0.46 of it" in text and "cost +0.0010" in text and text.endswith("met.")


def test_a_met_target_says_met():
    river = {"events_per_s": 1000.0, "events": 100_000}
    ceiling = {"auc": 0.8200, "events": 100_000}
    e2e = [_e2e("head", 100_000, 1100.0, 0.8190, headline=True)]
    lines = targets(e2e, river, ceiling, {"auc": 0.71, "events": 10_000})
    assert lines[0].endswith("target >= 1: met.")
    assert "within 0.002: met" in lines[1]
