"""The ``train-predictions`` records of a mini-batch, as the workers write them: one JSON
object per event (``event_id``, ``task``, ``label``, ``score``, the ``model_version`` that
scored it, its ``staleness`` in mini-batches, the ``worker`` and its ``clock``), or with
``--prediction-format batch`` one record per mini-batch holding them all, one per line."""

from __future__ import annotations

import json

import numpy as np  # noqa: F401  (the doctest's arrays)


def prediction_lines(task, worker, event_ids, labels, scores, version, staleness, clock,
                     batched: bool = False) -> list[str]:  # fmt: skip
    """The ``train-predictions`` records of a mini-batch: one JSON object per event, or with
    ``batched`` one record holding them all, one per line (NDJSON).

    >>> prediction_lines("ctr", "ctr#0", ["e1", "e2"], np.array([1, 0]), np.array([.9, .2]),
    ...                  7, 0, 3, batched=True)
    ['{"event_id":"e1","task":"ctr","label":1,"score":0.9,"model_version":7,"staleness":0,\
"worker":"ctr#0","clock":3}\\n{"event_id":"e2","task":"ctr","label":0,"score":0.2,\
"model_version":7,"staleness":0,"worker":"ctr#0","clock":3}']
    """
    tail = f',"model_version":{version},"staleness":{staleness},"worker":{json.dumps(worker)},'
    tail += f'"clock":{clock}}}'
    head = f',"task":{json.dumps(task)},"label":'
    lines = [
        f'{{"event_id":{json.dumps(event_id)}{head}{label},"score":{score!r}{tail}'
        for event_id, label, score in zip(
            event_ids, labels.tolist(), scores.tolist(), strict=True
        )  # fmt: skip
    ]
    return ["\n".join(lines)] if batched else lines
