"""Examples as columns (operators/examples.py): what the worker buffers and trains."""

import pickle
import random

import numpy as np

from connectors.hashing import hash_batch
from operators.examples import Examples
from operators.loop import state_pieces


def _examples(n: int, seed: int = 3) -> Examples:
    rng = random.Random(seed)
    features = [{f"f{j}": rng.choice("abc") for j in range(rng.randrange(0, 5))} for _ in range(n)]
    labels = [rng.randrange(2) for _ in range(n)]
    return Examples.of("ctr", [f"e{i}" for i in range(n)], labels, *hash_batch(features, 12))


def _rows(ex: Examples) -> list:
    """One (id, label, indices, values) per example."""
    return [
        (ex.event_ids[i], int(ex.labels[i]),
         ex.indices[ex.indptr[i]:ex.indptr[i + 1]].tolist(),
         ex.values[ex.indptr[i]:ex.indptr[i + 1]].tolist())
        for i in range(len(ex))
    ]  # fmt: skip


def test_pieces_of_a_chunk_concatenate_back_to_the_chunk():
    ex = _examples(1000)
    for size in (1, 7, 256, 1000, 5000):
        parts = [ex.rows(start, stop) for start, stop in state_pieces(len(ex), size)]
        assert _rows(Examples.concat(parts)) == _rows(ex)


def test_taking_a_mini_batch_leaves_the_rest_in_order():
    ex = _examples(300)
    taken, rest = ex.rows(0, 120), ex.rows(120, len(ex))
    assert len(taken) == 120 and len(rest) == 180
    assert _rows(taken) + _rows(rest) == _rows(ex)
    assert len(ex.rows(300, 300)) == 0 and ex.rows(300, 300).indptr.tolist() == [0]


def test_examples_survive_pickling_as_flink_state_does_it():
    ex = _examples(50).rows(10, 40)
    back = pickle.loads(pickle.dumps(ex))
    assert _rows(back) == _rows(ex) and back.task == "ctr"
    assert back.labels.dtype == np.int8 and back.indptr.dtype == np.int64


def test_slicing_and_concatenating_do_not_change_their_inputs():
    ex = _examples(40)
    before = _rows(ex)
    Examples.concat([ex.rows(0, 10), ex.rows(10, 40)])
    assert _rows(ex) == before
