"""The three train-predictions formats carry the same predictions."""

import json

import numpy as np
import pytest

from operators.predictions import PREDICTION_FORMATS, read_predictions, train_predictions

IDS = ["e-1", 'quote"d', "ünï", "e-4"]
ARGS = ("ctr", "ctr#1", IDS, np.array([1, 0, 0, 1]), np.array([0.9, 1 / 3, 1e-300, 0.5]),
        12, 2, 40)  # fmt: skip


@pytest.mark.parametrize("form", PREDICTION_FORMATS)
def test_every_format_reads_back_as_the_one_event_records(form):
    expected = [json.loads(line) for line in train_predictions(*ARGS, "event")]
    records = train_predictions(*ARGS, form)
    assert [p for r in records for p in read_predictions(r)] == expected
    assert len(records) == (len(IDS) if form == "event" else 1)
    assert expected[1]["score"] == 1 / 3 and expected[2]["event_id"] == "ünï"


def test_a_columns_record_holds_the_batch_fields_once():
    doc = json.loads(train_predictions(*ARGS, "columns")[0])
    assert doc["event_id"] == IDS and doc["label"] == [1, 0, 0, 1]
    fields = (doc["model_version"], doc["staleness"], doc["worker"], doc["clock"])
    assert fields == (12, 2, "ctr#1", 40)


def test_an_empty_batch_has_no_event_records_and_an_empty_columns_record():
    empty = ("ctr", "ctr#0", [], np.zeros(0, np.int64), np.zeros(0), 0, 0, 0)
    assert train_predictions(*empty, "event") == []
    assert read_predictions(train_predictions(*empty, "columns")[0]) == []
