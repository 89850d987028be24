import json

import numpy as np
import pytest

from connectors.errors import DecodeError
from connectors.events import decode_event
from operators.synthetic import (
    CATEGORICAL,
    EXPECTED_REASON,
    MALFORMED_KINDS,
    CtrSettings,
    CtrStream,
    corrupt,
    encode,
    truth_report,
)


def draw(**kw):
    docs, probs, labels = [], [], []
    for d, p, y in CtrStream(CtrSettings(**kw)).chunks():
        docs += d
        probs.append(p)
        labels.append(y)
    return docs, np.concatenate(probs), np.concatenate(labels)


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, _, _ = draw(events=12_000, seed=5)
    b, _, _ = draw(events=12_000, seed=5)
    c, _, _ = draw(events=12_000, seed=6)
    assert [encode(d) for d in a] == [encode(d) for d in b]
    assert [encode(d) for d in a] != [encode(d) for d in c]


def test_events_are_valid_and_shaped_like_ctr():
    docs, probs, labels = draw(events=30_000, seed=1)
    assert len(docs) == 30_000 and len({d["event_id"] for d in docs}) == 30_000
    for doc in docs[:2000]:
        decode_event(encode(doc))
    cats = [k for k, v in docs[0]["features"].items() if isinstance(v, str)]
    assert len(cats) >= 10
    site_values = {d["features"]["site"] for d in docs}
    assert len(site_values) > 500  # a long tail of rare sites
    assert 0.03 <= labels.mean() <= 0.2
    assert abs(labels.mean() - 0.10) < 0.02
    assert np.all((probs > 0) & (probs < 1))


def test_truth_is_the_true_models_own_auc_and_drift_changes_the_model():
    _, probs, labels = draw(events=40_000, seed=3, drift_at=20_000)
    report = truth_report(CtrSettings(events=40_000, seed=3, drift_at=20_000), probs, labels)
    assert 0.7 < report["auc"] < 0.95
    assert len(report["windows"]) == 4 and report["windows"][-1]["end"] == 40_000
    json.dumps(report)  # serializable as written to --truth
    still, _, _ = draw(events=40_000, seed=3)
    drifted, _, _ = draw(events=40_000, seed=3, drift_at=20_000)
    same_before = sum(
        a["label"] == b["label"] for a, b in zip(still[:20_000], drifted[:20_000], strict=False)
    )
    assert same_before == 20_000  # the stream before the drift point is untouched


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_each_malformed_kind_is_rejected_with_its_reason(kind):
    doc, _ = next(CtrStream(CtrSettings(events=1)).events())
    with pytest.raises(DecodeError, match=EXPECTED_REASON[kind]):
        decode_event(corrupt(doc, kind))


def test_settings_are_validated():
    with pytest.raises(ValueError, match="base_rate"):
        CtrSettings(events=1, base_rate=1.5)
    assert set(CATEGORICAL) >= {"site", "app", "device_type"}
