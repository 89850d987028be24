"""The predictor's follow-the-newest-run rule and the warm-start pieces (pure, no JVM)."""

import numpy as np
import pytest

from operators.local import OnlineLogistic
from operators.optim import make_optimizer
from operators.replica import Replica
from operators.serving import Following
from operators.shard_server import ShardServer
from operators.snapshot import Snapshot, SnapshotError, load_models, save


def test_follows_one_run_and_skips_duplicates_and_older_runs():
    f = Following.start()
    assert not f.has_model
    assert f.decide("r1", 0, 1, ts=100) == "switch"
    f.applied("r1", 0, 1, 100)
    f.applied("r1", 1, 1, 101)
    assert f.model_version == 2
    assert f.decide("r1", 0, 1, ts=102) == "skip"  # a replayed update
    assert f.decide("r1", 0, 2, ts=102) == "apply"
    assert f.decide("r0", 0, 50, ts=99) == "skip"  # a run older than what we follow
    assert f.decide("r2", 0, 1, ts=200) == "switch"  # a newer run
    f.switched("r2")
    f.applied("r2", 0, 1, 200)
    assert (f.run, f.model_version) == ("r2", 1)


def test_a_pinned_run_is_the_only_one_followed():
    f = Following.start(pinned="r1")
    assert f.decide("r2", 0, 1, ts=10**15) == "skip"
    assert f.decide("r1", 0, 1, ts=0) == "switch"


def test_start_from_a_snapshot_skips_what_it_already_holds():
    snap = Snapshot("ctr", 4, 7, np.zeros(17), run="r1", shard_versions={0: 3, 1: 4}, as_of_ms=500)
    f = Following.start(snapshot=snap)
    assert f.has_model and f.model_version == 7
    assert f.decide("r1", 0, 3, ts=400) == "skip"
    assert f.decide("r1", 0, 4, ts=600) == "apply"
    assert f.decide("r-old", 0, 9, ts=499) == "skip"
    assert f.decide("r-new", 0, 1, ts=501) == "switch"
    # a snapshot without a run (made from scikit-learn) keeps its version until a newer run
    bare = Following.start(snapshot=Snapshot("ctr", 4, 9, np.zeros(17), as_of_ms=500))
    assert bare.has_model and bare.model_version == 9
    assert bare.decide("r", 0, 1, ts=100) == "skip"


def test_a_gap_is_the_first_update_of_a_shard_that_does_not_follow_what_the_model_held():
    import pickle

    from operators.serving import RequestBatch, prediction_records

    snap = Snapshot("ctr", 4, 7, np.zeros(17), run="r1", shard_versions={0: 3, 1: 4}, as_of_ms=5)
    f = Following.start(snapshot=snap)
    f.applied("r1", 0, 4, 10)  # the next after the snapshot's 3
    f.applied("r1", 1, 9, 10)  # 5-8 are gone from the topic
    f.applied("r1", 2, 1, 10)  # a shard the snapshot did not have, from its first update
    f.applied("r1", 1, 11, 11)  # later updates of a shard are not its head: no new gap
    assert f.gaps == {1: 9}
    batch = RequestBatch("ctr", "ctr#0", ["q"], [10], np.array([0, 0]), np.array([], int),
                         np.array([]), [b"{}"])  # fmt: skip
    (line,) = prediction_records(batch, np.array([0.5]), f, "s", now_ms=20)
    assert '"model_gaps":{"1":9}' in line
    f.switched("r2")  # another run starts from zeros: its gaps are its own
    f.applied("r2", 0, 1, 30)
    assert f.gaps == {}
    (line,) = prediction_records(batch, np.array([0.5]), f, "s", now_ms=40)
    assert "model_gaps" not in line
    old = Following(run="r1", shard_versions={0: 2})  # as pickled before the fields existed
    state = {k: v for k, v in old.__dict__.items() if k not in ("gaps", "updated")}
    revived = pickle.loads(pickle.dumps(old))
    revived.__setstate__(state)
    revived.applied("r1", 0, 5, 50)
    assert revived.gaps == {0: 5}


@pytest.mark.parametrize(
    "name,hyper",
    [("ftrl", {"alpha": 0.1, "beta": 1.0, "l1": 0.5, "l2": 0.1}), ("adagrad", {}), ("sgd", {})],
)
def test_warm_start_gives_back_the_weights(name, hyper):
    opt = make_optimizer(name, **hyper)
    state = opt.init_state(50)
    rng = np.random.default_rng(1)
    w = rng.normal(size=50) * (rng.random(50) < 0.7)
    idx = np.arange(50)
    opt.warm(state, idx, w)
    assert np.max(np.abs(opt.weights(state, idx) - w)) <= 1e-12


def test_ftrl_warm_start_needs_a_non_zero_denominator():
    opt = make_optimizer("ftrl", alpha=0.1, beta=0.0, l2=0.0)
    with pytest.raises(ValueError, match="beta > 0 or l2 > 0"):
        opt.warm(opt.init_state(2), np.arange(2), np.array([0.5, 0.0]))


def test_shard_warm_start_covers_only_its_range_and_learns_on():
    bits = 13
    w = np.zeros((1 << bits) + 1)
    w[[5, 4100, 8000, 8192]] = [0.5, -1.0, 2.0, 0.25]
    server = ShardServer(make_optimizer("ftrl", alpha=0.1))
    blocks: dict = {}
    server.warm(blocks, w, 4096, 8192)  # the second of two shards, intercept excluded
    assert sorted(blocks) == [1]
    opt = server.optimizer
    assert opt.weights(blocks[1], np.array([4, 3904])).tolist() == [-1.0, 2.0]
    idx, new = server.apply(blocks, np.array([4100]), np.array([0.3]))
    assert idx.tolist() == [4100] and new[0] < -1.0  # a positive gradient lowers it


def test_local_learner_warm_start_scores_with_the_initial_weights():
    bits = 4
    w = np.linspace(-1, 1, (1 << bits) + 1)
    model = OnlineLogistic(bits, alpha=0.1, init_weights=w)
    indptr, indices, values = np.array([0, 2]), np.array([3, 9]), np.array([1.0, 2.0])
    first = model.learn_many(indptr, indices, values, [1])
    expected = 1 / (1 + np.exp(-(w[3] + 2 * w[9] + w[-1])))
    assert abs(first[0] - expected) <= 1e-12
    replica = Replica()
    replica.load_dense(w, 0, 8)
    assert np.array_equal(replica.dense(w.size)[:8], w[:8]) and replica.dense(w.size)[8] == 0


def test_load_models_takes_the_newest_version_of_each_task(tmp_path):
    for task, version in (("a", 1), ("a", 4), ("b", 2)):
        save(Snapshot(task, 3, version, np.full(9, float(version))), tmp_path)
    models = load_models(tmp_path)
    assert {t: s.version for t, s in models.items()} == {"a": 4, "b": 2}
    assert load_models(tmp_path / "b-v2")["b"].weights[0] == 2.0
    with pytest.raises(SnapshotError, match="no such snapshot directory"):
        load_models(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotError, match="holds no snapshot"):
        load_models(tmp_path / "empty")
