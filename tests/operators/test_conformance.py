"""River-style checks over every pure learner and operator object of the loop.

They live in Flink keyed state (pickled between bundles and in checkpoints), are rebuilt from
it after a restore, and are fed arrays that the caller keeps using, so each of them must:
survive a pickle round trip and go on exactly as the original; give the same result from the
same inputs; leave its inputs as they were; and take features it has never seen, or no longer
sees, without disturbing what it learned of the others.

Each subject is ``make() -> obj`` and ``feed(obj, batch) -> output``; a batch comes from
``batches(seed, features)``: sparse rows over a given set of feature indices.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from operators.dense_range import DenseRange
from operators.drift import LossDrift
from operators.evaluation import Prequential, ScoreHistogram
from operators.examples import Examples
from operators.local import OnlineLogistic
from operators.optim import make_rule
from operators.ps import TaskGate
from operators.replica import Replica, StateReplica
from operators.shard_server import ShardServer

BITS = 10
DIM = (1 << BITS) + 1


@dataclass
class Batch:
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    labels: np.ndarray


def batch(seed: int, features: np.ndarray, rows: int = 40) -> Batch:
    """``rows`` rows, each with 1-5 distinct features of ``features`` (values in [-2, 2])."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, rows)
    indices = np.concatenate([np.sort(rng.choice(features, k, replace=False)) for k in counts])
    values = rng.uniform(-2, 2, indices.size)
    indptr = np.concatenate(([0], np.cumsum(counts)))
    return Batch(indptr, indices.astype(np.int64), values, rng.integers(0, 2, rows))


OLD, NEW = np.arange(0, 40), np.arange(500, 540)  # two disjoint feature sets


def push_of(b: Batch) -> tuple[np.ndarray, np.ndarray]:
    """A shard push made of a batch: its distinct indices, one gradient each."""
    idx, inverse = np.unique(b.indices, return_inverse=True)
    return idx, np.bincount(inverse, b.values * (b.labels.repeat(np.diff(b.indptr)) - 0.5))


def _learn(model: OnlineLogistic, b: Batch):
    return model.learn_many(b.indptr, b.indices, b.values, b.labels)


def _dense_apply(obj, b: Batch):
    server, dr = obj
    return server.apply_dense(dr, *push_of(b))


def _block_apply(obj, b: Batch):
    server, blocks = obj
    return server.apply(blocks, *push_of(b))


def _replica(replica: Replica, b: Batch):
    idx, g = push_of(b)
    before = replica.lookup(idx)
    replica.assign(idx, before + g)
    return replica.lookup(idx)


def _prequential(p: Prequential, b: Batch):
    scores = 1 / (1 + np.exp(-b.values[b.indptr[:-1]]))
    return p.add(b.labels, scores, version=3, staleness=1, now=1000.0), p.cumulative()


def _histogram(h: ScoreHistogram, b: Batch):
    h.add(b.labels, 1 / (1 + np.exp(-b.values[b.indptr[:-1]])))
    return h.auc(), h.auc_error_bound()


def _examples(ex_holder: list, b: Batch):
    ids = [f"e{i}" for i in range(len(b.labels))]
    ex = Examples.of("t", ids, b.labels, b.indptr, b.indices, b.values)
    ex_holder.append(ex.rows(3, 17))
    joined = Examples.concat(ex_holder[-2:]) if len(ex_holder) > 1 else ex_holder[0]
    return joined.indptr, joined.indices, joined.values, joined.labels, joined.event_ids


def _state_replica(replica: StateReplica, b: Batch):
    """A read-my-writes replica: my push, then every other batch the shard's update that
    reflects my pushes so far (its state: the replica's own, as the shard would have it)."""
    idx, g = push_of(b)
    clock = replica.pushes_ = getattr(replica, "pushes_", -1) + 1
    replica.push(0, clock, idx, g)
    seen = replica.lookup(idx)
    if clock % 2:
        state = {k: replica.arrays[k][idx].copy() + 0.01 for k in replica.optimizer.state_names}
        replica.update(0, clock, idx, state)
    return seen, replica.lookup(idx)


def _loss_drift(drift: LossDrift, b: Batch):
    losses = np.abs(b.values[b.indptr[:-1]]) * (1 + b.labels)
    return drift.add(losses), drift.seen, drift.detector.mean


def _gate(gate: TaskGate, b: Batch):
    return [gate.refuse(f"task-{i % 7}") for i in b.indices[:20].tolist()]


def _server(standardize: bool, name: str = "ftrl"):
    return ShardServer(make_rule(name, standardize, alpha=0.3), block=64)


SUBJECTS: dict[str, tuple[Callable[[], Any], Callable[[Any, Batch], Any]]] = {
    "OnlineLogistic ftrl standardized": (lambda: OnlineLogistic(BITS, alpha=0.3), _learn),
    "OnlineLogistic adagrad": (
        lambda: OnlineLogistic(BITS, "adagrad", standardize=False, alpha=0.3),
        _learn,
    ),
    "OnlineLogistic sgd, filtered": (
        lambda: OnlineLogistic(BITS, "sgd", update_threshold=1e-3, standardize=False),
        _learn,
    ),
    "ShardServer dense": (
        lambda: (_server(False), DenseRange(("z", "n", "sent"), 0, DIM, 64)),
        _dense_apply,
    ),
    "ShardServer blocks": (lambda: (_server(False), {}), _block_apply),
    "ShardServer adagrad blocks": (lambda: (_server(False, "adagrad"), {}), _block_apply),
    "Replica": (lambda: Replica(block=64), _replica),
    "Prequential": (lambda: Prequential("t", window=25), _prequential),
    "ScoreHistogram": (ScoreHistogram, _histogram),
    "Examples": (list, _examples),
    "TaskGate": (lambda: TaskGate(max_tasks=4), _gate),
    "StateReplica": (
        lambda: StateReplica(
            make_rule("ftrl", False, alpha=0.3), DenseRange(("z", "n"), 0, DIM, 64)
        ),
        _state_replica,
    ),  # fmt: skip
    "LossDrift": (lambda: LossDrift(chunk=7), _loss_drift),
}


def same(a, b) -> bool:
    """Equal, element for element, through tuples, lists, dicts and arrays (NaN == NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b or (a != a and b != b)


@pytest.fixture(params=sorted(SUBJECTS))
def subject(request):
    return SUBJECTS[request.param]


def test_a_pickled_copy_goes_on_as_the_original(subject):
    make, feed = subject
    obj = make()
    feed(obj, batch(1, OLD))
    clone = pickle.loads(pickle.dumps(obj))
    for seed in (2, 3):
        assert same(feed(obj, batch(seed, OLD)), feed(clone, batch(seed, OLD)))


def test_the_same_inputs_give_the_same_result(subject):
    make, feed = subject
    a, b = make(), make()
    for seed in (1, 2, 3):
        assert same(feed(a, batch(seed, OLD)), feed(b, batch(seed, OLD)))


def test_inputs_are_not_mutated(subject):
    make, feed = subject
    obj = make()
    for seed in (1, 2):
        given = batch(seed, OLD)
        kept = copy.deepcopy(given)
        feed(obj, given)
        assert all(same(getattr(given, f), getattr(kept, f)) for f in vars(kept))


LEARNERS = sorted(
    k for k in SUBJECTS if k.split()[0] in ("OnlineLogistic", "ShardServer", "Replica")
)


@pytest.mark.parametrize("name", LEARNERS)
def test_new_features_are_taken_and_vanishing_ones_left_alone(name):
    make, feed = SUBJECTS[name]
    obj = make()
    for seed in (1, 2):
        feed(obj, batch(seed, OLD))
    before = copy.deepcopy(obj)
    out = feed(obj, batch(3, NEW))  # features it has never seen; the old ones vanish
    assert all(np.all(np.isfinite(np.asarray(x, float))) for x in _numbers(out))
    learned = _learned(before, obj)
    assert learned
    for what, was, now in learned:
        assert np.array_equal(was[OLD], now[OLD]), f"{what} of the vanished features changed"
    assert any(not np.array_equal(was[NEW], now[NEW]) for _, was, now in learned)


def _numbers(out):
    if isinstance(out, np.ndarray) and out.dtype.kind in "fiu":
        yield out
    elif isinstance(out, (int, float)) and not isinstance(out, bool):
        yield out
    elif isinstance(out, (list, tuple)):
        for x in out:
            yield from _numbers(x)
    elif isinstance(out, dict):
        for x in out.values():
            yield from _numbers(x)


def _learned(before, after):
    """(name, dense before, dense after) of what a learner holds per coordinate: its
    optimizer state, the standardization's moments included (not the weights on raw values,
    which a standardization rescales with every row)."""
    if isinstance(after, OnlineLogistic):
        names = after.server_.optimizer.state_names
        return [(k, before.shard_.arrays[k], after.shard_.arrays[k]) for k in names]
    if isinstance(after, tuple) and isinstance(after[0], ShardServer):
        return [(k, _dense(before[1], k), _dense(after[1], k)) for k in ("sent",)]
    if isinstance(after, Replica):
        return [("w", before.dense(DIM), after.dense(DIM))]
    return []


def _dense(store, name: str) -> np.ndarray:
    if isinstance(store, DenseRange):
        return store.arrays[name]
    out = np.zeros(-(-DIM // 64) * 64)
    for bid, arrays in store.items():
        out[bid * 64 : (bid + 1) * 64] = arrays[name]
    return out
