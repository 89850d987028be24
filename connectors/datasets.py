"""Small real data sets that ship inside installed PyPI packages, as training events.

Nothing is downloaded: scikit-learn's ``load_breast_cancer`` and ``load_digits`` and River's
``Bananas`` and ``Phishing`` are files inside those packages. Each row becomes one training
event (features by column name, numbers stay numbers, the label 0/1) in the package's own row
order. ``digits`` is the binary task "the digit is 5 or more" over the 64 pixel counts.

>>> docs = events("breast_cancer")
>>> len(docs), docs[0]["label"], round(docs[0]["features"]["mean radius"], 2)
(569, 0, 17.99)
"""

from __future__ import annotations

from connectors.errors import ConfigError

NAMES = ("breast_cancer", "digits", "phishing", "bananas")
# the data sets on which linear learners differ by more than an AUC's noise: on Bananas
# (two coordinates, a non-linear boundary) every linear learner measured scores 0.536-0.546,
# within one standard error (about 0.008 on 5,300 rows) of each other
SEPARATING = ("breast_cancer", "digits", "phishing")


def rows(name: str) -> tuple[list[dict], list[int]]:
    """``(feature dicts, labels 0/1)`` of data set ``name``, in the package's order."""
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        return _named(data), [int(y) for y in data.target]
    if name == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        return _named(data), [int(y >= 5) for y in data.target]
    if name in ("bananas", "phishing"):
        from river import datasets  # River is in the test and bench extras

        stream = datasets.Bananas() if name == "bananas" else datasets.Phishing()
        xs, ys = [], []
        for x, y in stream:
            xs.append({str(k): float(v) for k, v in x.items()})
            ys.append(int(bool(y)))
        return xs, ys
    raise ConfigError(f"unknown data set {name!r}; one of {', '.join(NAMES)}")


def _named(data) -> list[dict]:
    """A scikit-learn bunch's rows as feature dicts by column name."""
    names = [str(n) for n in data.feature_names]
    return [dict(zip(names, map(float, row), strict=True)) for row in data.data]


def events(name: str, task: str = "default") -> list[dict]:
    """The rows of ``name`` as training events ``e-000000``, ``e-000001``, ... in order."""
    xs, ys = rows(name)
    return [
        {"event_id": f"e-{i:06d}", "ts": 1_700_000_000_000 + i, "task": task, "label": y,
         "features": x}
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
    ]  # fmt: skip
