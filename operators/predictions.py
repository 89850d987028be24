"""The ``train-predictions`` records of a mini-batch, as the workers write them: one JSON
object per event (``event_id``, ``task``, ``label``, ``score``, the ``model_version`` that
scored it, its ``staleness`` in mini-batches, the ``worker`` and its ``clock``), or one record
per mini-batch holding them all: ``--prediction-format batch`` one object per line (NDJSON),
``--prediction-format columns`` one object of columns, the per-batch fields once::

    {"event_id": ["e1", "e2"], "label": [1, 0], "score": [0.9, 0.2], "task": "ctr",
     "model_version": 7, "staleness": 0, "worker": "ctr#0", "clock": 3}

A columns record is written in a twentieth of the time of the lines (0.04 against 0.97 µs per
event, ``benchmarks/hash_bench.py``). :func:`read_predictions` reads any of the three.
"""

from __future__ import annotations

import json

import numpy as np
import orjson

PREDICTION_FORMATS = ("event", "batch", "columns")
_COLUMNS = ("event_id", "label", "score")


def train_predictions(task, worker, event_ids, labels, scores, version, staleness, clock,
                       form: str = "event") -> list[str]:  # fmt: skip
    """The ``train-predictions`` records of a mini-batch in format ``form``
    (``PREDICTION_FORMATS``).

    >>> args = ("ctr", "ctr#0", ["e1", "e2"], np.array([1, 0]), np.array([.9, .2]), 7, 0, 3)
    >>> train_predictions(*args, "batch")
    ['{"event_id":"e1","task":"ctr","label":1,"score":0.9,"model_version":7,"staleness":0,\
"worker":"ctr#0","clock":3}\\n{"event_id":"e2","task":"ctr","label":0,"score":0.2,\
"model_version":7,"staleness":0,"worker":"ctr#0","clock":3}']
    >>> train_predictions(*args, "columns")
    ['{"event_id":["e1","e2"],"label":[1,0],"score":[0.9,0.2],"task":"ctr","model_version":7,\
"staleness":0,"worker":"ctr#0","clock":3}']
    >>> read_predictions(train_predictions(*args, "columns")[0]) == [
    ...     json.loads(line) for line in train_predictions(*args, "event")]
    True
    """
    if form == "columns":
        doc = {"event_id": event_ids, "label": np.asarray(labels, np.int64),
               "score": np.asarray(scores, np.float64), "task": task, "model_version": version,
               "staleness": staleness, "worker": worker, "clock": clock}  # fmt: skip
        return [orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()]
    tail = f',"model_version":{version},"staleness":{staleness},"worker":{json.dumps(worker)},'
    tail += f'"clock":{clock}}}'
    head = f',"task":{json.dumps(task)},"label":'
    lines = [
        f'{{"event_id":{json.dumps(event_id)}{head}{label},"score":{score!r}{tail}'
        for event_id, label, score in zip(
            event_ids, labels.tolist(), scores.tolist(), strict=True
        )  # fmt: skip
    ]
    return ["\n".join(lines)] if form == "batch" else lines


def read_predictions(record: str | bytes) -> list[dict]:
    """The predictions of one ``train-predictions`` record of any format, one dict per event
    in the one-event form."""
    text = record.decode() if isinstance(record, bytes) else record
    if text.startswith('{"event_id":['):
        doc = orjson.loads(text)
        rest = {k: v for k, v in doc.items() if k not in _COLUMNS}
        return [{"event_id": i, "task": rest["task"], "label": label, "score": score,
                 **{k: v for k, v in rest.items() if k != "task"}}
                for i, label, score in zip(*(doc[k] for k in _COLUMNS), strict=True)]  # fmt: skip
    return [json.loads(line) for line in text.splitlines()]
