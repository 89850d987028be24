import random

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher

from connectors.hashing import _index_sign, hash_batch, hash_features, stack_rows


def random_features(rng: random.Random) -> dict:
    features = {}
    for _ in range(rng.randint(0, 15)):
        name = rng.choice(["site", "app", "os", "price", "hour", "ünï", "x" * rng.randint(1, 30)])
        name += str(rng.randint(0, 50))
        kind = rng.random()
        if kind < 0.55:
            features[name] = rng.choice(["a", "ios", "ü€", "", str(rng.random())])
        elif kind < 0.65:
            features[name] = 0
        elif kind < 0.8:
            features[name] = rng.randint(-5, 5)
        else:
            features[name] = rng.uniform(-1e3, 1e3)
    return features


@pytest.mark.parametrize("bits", [1, 4, 18, 20])
def test_parity_with_feature_hasher_on_random_dicts(bits):
    rng = random.Random(bits)
    batch = [random_features(rng) for _ in range(3000)]
    expected = FeatureHasher(n_features=2**bits, input_type="dict").transform(batch).tocsr()
    expected.eliminate_zeros()  # FeatureHasher keeps explicit zeros where duplicates cancel
    indptr, indices, values = hash_batch(batch, bits)
    got = sp.csr_matrix((values, indices, indptr), shape=expected.shape)
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)  # bit for bit


def test_one_event_is_sorted_unique_and_drops_zeros():
    indices, values = hash_features({"a": "x", "b": 0, "c": 3.0}, 20)
    assert list(indices) == sorted(set(indices))
    assert 0.0 not in values
    assert len(indices) == 2


def test_int32_min_hash_follows_scikit_learn():
    # scikit-learn maps abs(-2**31) % n to (2**31 - 1 - (n - 1)) % n with a negative sign
    assert _index_sign(-(2**31), 2**20) == ((2**31 - 1 - (2**20 - 1)) % 2**20, -1.0)


def test_empty_batch():
    indptr, indices, values = hash_batch([], 10)
    assert indptr.tolist() == [0] and indices.size == 0 and values.size == 0


def test_batch_rows_equal_event_by_event_rows():
    # the training job hashes a batch at once, serving one event at a time: same rows
    rng = random.Random(7)
    batch = [random_features(rng) for _ in range(2000)]
    expected = stack_rows(hash_features(features, 18) for features in batch)
    got = hash_batch(batch, 18)
    assert [a.tolist() for a in got] == [a.tolist() for a in expected]
