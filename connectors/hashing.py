"""Feature hashing, bit for bit the same as scikit-learn's
``FeatureHasher(n_features=2**bits, input_type="dict")`` (``alternate_sign=True``).

A string value ``v`` of feature ``name`` becomes the token ``"name=v"`` with value 1; a number
becomes the token ``name`` with that value. The token is hashed with scikit-learn's own
MurmurHash3 (32-bit, seed 0, signed); the index is ``abs(h) % 2**bits`` and the sign of ``h``
flips the value. Duplicate indices in one event are summed and zeros dropped, as
``FeatureHasher`` does, so an exported model scores identically inside a scikit-learn pipeline.

Categorical tokens repeat endlessly in a stream, so their hashes are memoized.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache, lru_cache

import numpy as np

from connectors.errors import ConfigError
from connectors.events import DEFAULT_CLIP

MIN_BITS, MAX_BITS = 1, 30
_INT32_MIN = -(2**31)


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"hash bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits


@lru_cache(maxsize=1 << 20)
def token_hash(token: str) -> int:
    """Signed 32-bit MurmurHash3 of ``token`` (UTF-8), seed 0: scikit-learn's own (imported
    on first use: scikit-learn takes a second to import, and every command imports this
    module for ``check_bits``)."""
    from sklearn.utils import murmurhash3_32

    return murmurhash3_32(token, seed=0, positive=False)


def _index_sign(h: int, n_features: int) -> tuple[int, float]:
    if h == _INT32_MIN:  # abs(-2**31) overflows int32; scikit-learn defines it thus
        return (2147483647 - (n_features - 1)) % n_features, -1.0
    return abs(h) % n_features, (1.0 if h >= 0 else -1.0)


def hash_features(features: Mapping[str, str | float], bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash one event's features into sorted unique ``(indices int64, values float64)``.

    Examples
    --------
    >>> idx, val = hash_features({"os": "ios", "price": 2.5}, bits=20)
    >>> len(idx), sorted(abs(val).tolist())
    (2, [1.0, 2.5])
    """
    n_features = 1 << bits
    acc: dict[int, float] = {}
    for name, value in features.items():
        if isinstance(value, str):
            token, value = f"{name}={value}", 1.0
        else:
            token = name
            if value == 0:
                continue
        index, sign = _index_sign(token_hash(token), n_features)
        acc[index] = acc.get(index, 0.0) + sign * float(value)
    items = sorted((i, v) for i, v in acc.items() if v != 0.0)
    indices = np.fromiter((i for i, _ in items), dtype=np.int64, count=len(items))
    values = np.fromiter((v for _, v in items), dtype=np.float64, count=len(items))
    return indices, values


def stack_rows(
    rows: Iterable[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack hashed rows ``(indices, values)`` into CSR arrays ``(indptr, indices, values)``."""
    rows = list(rows)
    if not rows:
        return np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    indptr = np.concatenate(([0], np.cumsum([len(idx) for idx, _ in rows]))).astype(np.int64)
    indices = np.concatenate([idx for idx, _ in rows]).astype(np.int64)
    values = np.concatenate([val for _, val in rows]).astype(np.float64)
    return indptr, indices, values


def hash_batch(
    batch: Iterable[Mapping[str, str | float]], bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash many events into CSR arrays ``(indptr, indices, values)``, each row as
    :func:`hash_features` gives it.

    One call into scikit-learn's ``FeatureHasher``, whose compiled loop hashes every token of
    the batch: 4.0 µs per event of the ``ctr`` stream against 18.4 µs event by event
    (``benchmarks/hash_bench.py``).

    Examples
    --------
    >>> indptr, indices, values = hash_batch([{"os": "ios"}, {}, {"price": 2.5}], bits=20)
    >>> indptr.tolist(), sorted(abs(values).tolist())
    ([0, 1, 1, 2], [1.0, 2.5])
    """
    batch = list(batch)
    if not batch:
        return stack_rows([])
    matrix = _hasher(bits).transform(batch)  # duplicates summed, indices sorted
    matrix.eliminate_zeros()  # where duplicates cancel, as hash_features drops them
    return (
        matrix.indptr.astype(np.int64),
        matrix.indices.astype(np.int64),
        matrix.data.astype(np.float64),
    )


def hash_columns(features: Mapping[str, list], n: int, bits: int):
    """Hash ``n`` events given as feature columns (``connectors.columns``: one value per
    event, None where an event lacks the feature) into CSR arrays ``(indptr, indices,
    values)``, the rows :func:`hash_batch` makes of the same events.

    A categorical column is hashed once per distinct value (memoized across calls), a
    numeric column's token once. Each column gives an event at most one entry, so the rows
    are an ``(n, columns)`` table sorted row by row; only a record where two of an event's
    features share an index (summed as scikit-learn sums them) goes through scipy: 2.5 µs per
    event of the ``ctr`` stream against 2.7-2.8 through scipy for every record.

    >>> cols = {"os": ["ios", None, "ios"], "price": [2.5, 1.0, None]}
    >>> indptr, indices, values = hash_columns(cols, 3, bits=20)
    >>> ref = hash_batch([{"os": "ios", "price": 2.5}, {"price": 1.0}, {"os": "ios"}], 20)
    >>> all((a == b).all() for a, b in zip((indptr, indices, values), ref))
    True
    """
    n_features = 1 << bits
    slots = list(_column_slots(features, n_features))
    if not slots:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0)
    # one (index, value) per event and slot, index n_features where the event has none
    idx = np.stack([i for i, _ in slots], axis=1)
    val = np.stack([v for _, v in slots], axis=1)
    order = np.argsort(idx, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, 1)
    keep = idx != n_features
    if (idx[:, 1:] == idx[:, :-1])[keep[:, 1:]].any():
        return _hash_columns_summed(slots, n, n_features)
    val = np.take_along_axis(val, order, 1)
    keep &= val != 0
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return indptr, idx[keep], val[keep]


def _column_slots(features: Mapping[str, list], n_features: int):
    """Per column (a list, or an Arrow array), ``(indices, values)`` of one entry per event
    (index ``n_features``: none); a list of both strings and numbers gives two."""
    for name, col in features.items():
        if not isinstance(col, list):  # an Arrow array: typed, hashed per dictionary entry
            from connectors.arrow_records import arrow_slots

            yield arrow_slots(name, col, n_features)
            continue
        kinds = set(map(type, col))
        if str in kinds:  # "name=value" tokens, value 1
            strings = col if kinds <= {str, type(None)} else [v if type(v) is str else None
                                                              for v in col]  # fmt: skip
            yield codes_slot(_codes(name, strings, n_features), n_features)
        if kinds & {int, float}:  # the token "name", the number as value
            if kinds <= {int, float}:
                x = np.array(col, np.float64)
            else:
                x = np.array([v if type(v) is int or type(v) is float else 0.0 for v in col],
                             np.float64)  # fmt: skip
            yield number_slot(name, x, n_features)


def codes_slot(codes: np.ndarray, n_features: int):
    """A categorical column's slot from its signed codes (``_codes``; 0: none)."""
    return np.where(codes == 0, n_features, np.abs(codes) - 1), np.sign(codes).astype(float)


def number_slot(name: str, x: np.ndarray, n_features: int):
    """A numeric column's slot: the token ``name``, the numbers (0: none) as values."""
    index, sign = _index_sign(token_hash(name), n_features)
    return np.where(x != 0, index, n_features), sign * x


def _hash_columns_summed(slots: list, n: int, n_features: int):
    """The rows through scipy, which sums an event's entries that share an index in the
    order scikit-learn's ``FeatureHasher`` does (bit for bit)."""
    from scipy.sparse import csr_matrix

    rows = np.concatenate([np.flatnonzero(i != n_features) for i, _ in slots])
    cols = np.concatenate([i[i != n_features] for i, _ in slots])
    vals = np.concatenate([v[i != n_features] for i, v in slots])
    matrix = csr_matrix((vals, (rows, cols)), shape=(n, n_features))  # duplicates summed
    matrix.sort_indices()
    matrix.eliminate_zeros()
    return (
        matrix.indptr.astype(np.int64),
        matrix.indices.astype(np.int64),
        matrix.data.astype(np.float64),
    )


_CODES: dict = {}  # (n_features, name) -> {value: (index + 1) * sign, None: 0}


def _codes(name: str, col: list, n_features: int) -> np.ndarray:
    """Each string value's signed code ``(index + 1) * sign`` (0 for None), memoized."""
    cache = _CODES.setdefault((n_features, name), {None: 0})
    codes = list(map(cache.get, col))
    if None in codes:
        if len(cache) > 1 << 16:  # a column of ever new values: do not grow for ever
            cache.clear()
            cache[None] = 0
        for value in set(col) - cache.keys():
            index, sign = _index_sign(token_hash(f"{name}={value}"), n_features)
            cache[value] = int((index + 1) * sign)
        codes = list(map(cache.get, col))
    return np.array(codes, np.int64)


@cache
def _hasher(bits: int):
    from sklearn.feature_extraction import FeatureHasher

    return FeatureHasher(n_features=1 << check_bits(bits), input_type="dict")


def clip_values(values: np.ndarray, limit: float | None = DEFAULT_CLIP) -> np.ndarray:
    """Clip hashed feature values to ``[-limit, limit]`` in place (None or 0: no clipping).

    One numeric feature of, say, 1e200 would overflow the optimizer's accumulated squared
    gradient, and the shard would then reject the whole push that holds it; clipped, the row
    still teaches something and the rest of the mini-batch is learned.

    >>> clip_values(np.array([1.0, -1e200, 3e7]), 1e6).tolist()
    [1.0, -1000000.0, 1000000.0]
    """
    if limit:
        np.clip(values, -limit, limit, out=values)
    return values
