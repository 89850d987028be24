import json

import numpy as np
import pytest

from connectors.messages import ModelUpdate
from operators.snapshot import Snapshot, SnapshotError, from_updates, load, save

BITS = 6


def snap(version=3):
    w = np.random.default_rng(version).normal(0, 1, 2**BITS + 1)
    return Snapshot(task="ctr", bits=BITS, version=version, weights=w, clock={"0": {"ctr#0": 2}})


def test_round_trip(tmp_path):
    original = snap()
    out = save(original, tmp_path)
    assert out.name == "ctr-v3"
    loaded = load(out)
    np.testing.assert_array_equal(loaded.weights, original.weights)
    assert (loaded.task, loaded.bits, loaded.version, loaded.clock) == (
        "ctr",
        BITS,
        3,
        original.clock,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hashing"]["n_features"] == 2**BITS and len(manifest["files"]) == 1


def test_refuses_checksum_mismatch(tmp_path):
    out = save(snap(), tmp_path)
    np.savez(out / "weights.npz", weights=np.zeros(2**BITS + 1))
    with pytest.raises(SnapshotError, match="checksum mismatch for weights.npz"):
        load(out)


def test_refuses_missing_files(tmp_path):
    out = save(snap(), tmp_path)
    (out / "weights.npz").unlink()
    with pytest.raises(SnapshotError, match="missing file weights.npz"):
        load(out)
    with pytest.raises(SnapshotError, match="missing manifest.json"):
        load(tmp_path / "nothing-here")


def test_refuses_unknown_format_version(tmp_path):
    out = save(snap(), tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="unknown format version 99"):
        load(out)


def test_refuses_anything_that_needs_pickle(tmp_path):
    out = save(snap(), tmp_path)
    np.savez(out / "weights.npz", weights=np.array([{"evil": 1}], dtype=object))
    manifest = json.loads((out / "manifest.json").read_text())
    import hashlib

    manifest["files"]["weights.npz"] = hashlib.sha256(
        (out / "weights.npz").read_bytes()
    ).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="without pickle"):
        load(out)


def test_from_updates_keeps_the_newest_run_and_last_values():
    def update(run, shard, version, idx, vals, task="ctr"):
        return ModelUpdate(
            run,
            task,
            shard,
            version,
            {"ctr#0": version - 1},
            np.array(idx),
            np.array(vals, dtype=float),
        )

    snaps = from_updates(
        [
            update("old", 0, 1, [1], [9.0]),
            update("new", 0, 1, [1, 2], [0.5, 0.25]),
            update("new", 1, 1, [40], [1.5]),
            update("new", 0, 2, [1], [0.75]),
            update("new", 0, 1, [3], [2.0], task="fraud"),
        ],
        BITS,
    )
    assert [s.task for s in snaps] == ["ctr", "fraud"]
    ctr = snaps[0]
    assert ctr.version == 3 and ctr.run == "new"
    assert ctr.weights[[1, 2, 40]].tolist() == [0.75, 0.25, 1.5]
    assert np.count_nonzero(ctr.weights) == 3
    with pytest.raises(SnapshotError, match="beyond 2\\*\\*6"):
        from_updates([update("r", 0, 1, [5000], [1.0])], BITS)


@pytest.mark.kafka
def test_snapshot_and_export_commands(kafka, topic_name, tmp_path):
    import joblib

    from connectors.admin import create_topics, produce
    from tests.cli_helpers import streamshard

    rng = np.random.default_rng(5)
    idx = np.arange(0, 2**BITS + 1, 3)
    vals = rng.normal(0, 1, idx.size)
    update = ModelUpdate("r1", "ctr", 0, 7, {"ctr#0": 6}, idx, vals)
    create_topics(kafka, [topic_name])
    produce(kafka, topic_name, [(None, b"not an update"), (None, update.to_json().encode())])
    env = {"STREAMSHARD_BOOTSTRAP": kafka.bootstrap_servers}
    out = streamshard(
        "snapshot",
        "--updates-topic",
        topic_name,
        "--out",
        str(tmp_path),
        "--hash-bits",
        str(BITS),
        "--idle",
        "1",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "ctr-v7" in out.stdout
    # versions 1-6 of shard 0 are not on the topic: the user is told
    assert "no longer holds run r1's first updates of task ctr (shard 0 starts at version 7)" in (
        out.stderr
    )
    # the snapshot plus the topic's tail: only updates newer than it are read
    newer = ModelUpdate("r1", "ctr", 0, 8, {"ctr#0": 7}, idx[:1], np.array([42.0]))
    produce(kafka, topic_name, [(None, newer.to_bytes())])
    base = str(tmp_path / "ctr-v7")
    args = ["snapshot", "--updates-topic", topic_name, "--out", str(tmp_path / "up")]
    out = streamshard(*args, "--hash-bits", str(BITS), "--idle", "1", "--init-model", base, env=env)
    assert out.returncode == 0 and "no longer holds" not in out.stderr, out.stderr
    assert "ctr-v8" in out.stdout
    up = load(tmp_path / "up" / "ctr-v8")
    assert up.weights[idx[0]] == 42.0 and up.weights[idx[1:]].tolist() == vals[1:].tolist()
    out = streamshard(*args, "--hash-bits", str(BITS + 1), "--init-model", base, env=env)
    assert out.returncode == 2 and f"hashed with 2**{BITS} features" in out.stderr
    # a folder of snapshots as train --init-model reads it: of one task, its newest; of two
    # tasks, refused (a snapshot brings one task up to date)
    out = streamshard(*args, "--hash-bits", str(BITS), "--idle", "1", "--init-model",
                      str(tmp_path / "up"), env=env)  # fmt: skip
    assert out.returncode == 0 and "ctr-v8" in out.stdout, out.stderr
    save(Snapshot("fraud", BITS, 1, np.zeros(2**BITS + 1)), tmp_path / "up")
    out = streamshard(*args, "--hash-bits", str(BITS), "--init-model", str(tmp_path / "up"),
                      env=env)  # fmt: skip
    assert out.returncode == 2 and "2 tasks (ctr, fraud); name one of them" in out.stderr
    out = streamshard(
        "export",
        "--model",
        str(tmp_path / "ctr-v7"),
        "--to",
        "sklearn",
        "--out",
        str(tmp_path / "model.joblib"),
    )
    assert out.returncode == 0, out.stderr
    pipe = joblib.load(tmp_path / "model.joblib")
    weights = np.zeros(2**BITS + 1)
    weights[idx] = vals
    from connectors.hashing import hash_features

    features = {"site": "a1", "price": 2.5}
    i, v = hash_features(features, BITS)
    expected = 1 / (1 + np.exp(-(weights[i] @ v + weights[-1])))
    assert abs(pipe.predict_proba([features])[0, 1] - expected) <= 1e-9
    bad = streamshard("export", "--model", str(tmp_path / "missing"), "--out", "x")
    assert bad.returncode == 2 and "no such directory" in bad.stderr
    (tmp_path / "empty").mkdir()
    bad = streamshard("export", "--model", str(tmp_path / "empty"), "--out", "x")
    assert bad.returncode == 2 and "missing manifest.json" in bad.stderr


@pytest.mark.parametrize("task", ["../../escaped", "/abs/olute", "a/b"])
def test_no_task_name_writes_outside_the_folder(tmp_path, task):
    root = tmp_path / "out"
    root.mkdir()
    bad = Snapshot(task=task, bits=BITS, version=3, weights=snap().weights, clock={})
    with pytest.raises(SnapshotError, match="plain name|leads outside"):
        save(bad, root)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"]


def test_a_symlinked_snapshot_folder_is_refused(tmp_path):
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "ctr-v3").symlink_to(elsewhere)
    with pytest.raises(SnapshotError, match="leads outside"):
        save(snap(), root)
    assert not any(elsewhere.iterdir())


def test_weights_must_be_finite_to_load(tmp_path):
    weights = snap().weights.copy()
    weights[5] = np.nan
    out = save(Snapshot(task="ctr", bits=BITS, version=3, weights=weights, clock={}), tmp_path)
    with pytest.raises(SnapshotError, match="not all finite"):
        load(out)


def _update(run, shard, version, idx, vals, task="ctr", ts=0):
    clock = {"ctr#0": version - 1}
    return ModelUpdate(
        run, task, shard, version, clock, np.array(idx), np.array(vals, float), ts=ts
    )


def test_a_topic_that_lost_a_runs_start_is_reported_as_a_gap():
    whole = [_update("r", 0, 1, [1], [0.5]), _update("r", 0, 2, [2], [0.25])]
    assert from_updates(whole, BITS)[0].gaps == {}
    (tail,) = from_updates(whole[1:] + [_update("r", 1, 1, [3], [1.0])], BITS)
    assert tail.gaps == {0: 2}  # shard 0's version 1 is gone; shard 1 is whole
    assert tail.weights[1] == 0.0  # what only the lost update wrote is missing


def test_a_snapshot_plus_the_topics_tail_equals_the_whole_topic():
    updates = [
        _update("r", 0, 1, [1, 2], [0.5, 0.25], ts=1),
        _update("r", 1, 1, [40], [1.5], ts=2),
        _update("r", 0, 2, [1], [0.75], ts=3),
        _update("r", 1, 2, [41], [-1.0], ts=4),
        _update("r", 0, 3, [2], [0.125], ts=5),
    ]
    (whole,) = from_updates(updates, BITS)
    (base,) = from_updates(updates[:3], BITS)
    # the topic has lost its first three updates; the snapshot holds them
    (resumed,) = from_updates(updates[3:], BITS, base=base)
    assert resumed.gaps == {} and resumed.version == whole.version == 5
    assert resumed.weights.tolist() == whole.weights.tolist()
    assert resumed.shard_versions == whole.shard_versions and resumed.as_of_ms == 5
    # updates the snapshot already holds are not applied again, nor are other runs'
    (again,) = from_updates(updates + [_update("other", 0, 9, [1], [9.0])], BITS, base=base)
    assert again.weights.tolist() == whole.weights.tolist()
    (short,) = from_updates(updates[4:], BITS, base=base)
    assert short.gaps == {}  # shard 0 goes on from the base; shard 1 has nothing newer
    (lost,) = from_updates(updates[4:] + [_update("r", 1, 3, [41], [2.0])], BITS, base=base)
    assert lost.gaps == {1: 3}  # shard 1's version 2 is neither in the base nor on the topic
