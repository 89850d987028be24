"""Per-coordinate update rules (the parameter server's server-side functions), in numpy.

Each optimizer keeps named state arrays (``state_names``) over some coordinate range and
updates the coordinates ``idx`` of those arrays with the gradients ``g`` in place. The shards
and the single-process reference learner call the very same ``apply``, so with the same
gradients they hold the same numbers.

Examples
--------
>>> opt = Ftrl(alpha=0.1)
>>> state = opt.init_state(4)
>>> w = opt.apply(state, np.array([1, 3]), np.array([0.5, -0.5]))
>>> bool(w[0] < 0 < w[1])
True
"""

from __future__ import annotations

import numpy as np

from connectors.errors import ConfigError


def _check(name: str, value: float, low: float = 0.0, strict: bool = False) -> float:
    ok = value > low if strict else value >= low
    if not (isinstance(value, (int, float)) and np.isfinite(value) and ok):
        relation = ">" if strict else ">="
        raise ConfigError(f"{name} must be a finite number {relation} {low:g}, got {value!r}")
    return float(value)


class _Rule:
    """What every update rule shares: ``apply`` in place, by way of its ``step``."""

    state_names: tuple = ()

    def combine(self, parts: list) -> tuple[np.ndarray, np.ndarray]:
        """Pushes ``[(idx, g), ...]`` of one clock (sync mode) as one push."""
        return combine_sum(parts)

    boosts = False  # has per-coordinate step sizes that ``boost`` can raise

    def boost(self, state: dict[str, np.ndarray], factor: float) -> None:
        """Raise every coordinate's step size about ``factor`` times (``--on-drift boost``),
        in place: the accumulated squared gradients shrink by ``factor**2``, so the raise
        fades as new gradients arrive; the weights stay (FTRL's exactly when beta is 0)."""
        raise ConfigError(f"--on-drift boost needs ftrl or adagrad, not {self.name}")

    def apply(self, state: dict[str, np.ndarray], idx: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Apply gradients ``g`` to the unique coordinates ``idx``; return their new weights."""
        new, w = self.step({k: state[k][idx] for k in self.state_names}, g)
        for k, v in new.items():
            state[k][idx] = v
        return w


class Ftrl(_Rule):
    """FTRL-Proximal (McMahan et al., KDD 2013) with L1 and L2; state ``z`` and ``n``."""

    name = "ftrl"
    state_names = ("z", "n")
    boosts = True

    def boost(self, state: dict[str, np.ndarray], factor: float) -> None:
        state["z"] /= factor  # w = -(z - sign(z) l1) alpha / (beta + sqrt(n)): kept
        state["n"] /= factor * factor

    def __init__(self, alpha: float = 0.2, beta: float = 1.0, l1: float = 0.0, l2: float = 0.0):
        self.alpha = _check("alpha", alpha, strict=True)
        self.beta = _check("beta", beta)
        self.l1 = _check("l1", l1)
        self.l2 = _check("l2", l2)

    def init_state(self, size: int) -> dict[str, np.ndarray]:
        return {"z": np.zeros(size), "n": np.zeros(size)}

    def weights(self, state: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        return self._weights(state["z"][idx], state["n"][idx])

    def warm(self, state: dict[str, np.ndarray], idx: np.ndarray, w: np.ndarray) -> None:
        """Set coordinates ``idx`` to weights ``w`` with no history (``n = 0``)."""
        denom = self.beta / self.alpha + self.l2
        if denom <= 0 and np.any(w != 0):
            raise ConfigError("an FTRL warm start needs beta > 0 or l2 > 0")
        state["z"][idx] = -w * denom - np.sign(w) * self.l1
        state["n"][idx] = 0.0

    def _weights(self, z: np.ndarray, n: np.ndarray) -> np.ndarray:
        scale = (self.beta + np.sqrt(n)) / self.alpha
        if self.l2:
            scale += self.l2
        if not self.l1:  # the closed form without the soft threshold; + 0.0 turns -0.0 into 0.0
            w = z / scale
            np.negative(w, out=w)
            w += 0.0
            return w
        w = -(z - np.sign(z) * self.l1) / scale
        return np.where(np.abs(z) <= self.l1, 0.0, w)

    def step(
        self, gathered: dict[str, np.ndarray], g: np.ndarray, w: np.ndarray | None = None
    ) -> tuple[dict, np.ndarray]:
        """The update rule on state gathered at some coordinates: ``(new state, new weights)``;
        ``w``, where the caller has them, are the current weights there (saves computing them)."""
        z, n = gathered["z"], gathered["n"]
        if w is None:
            w = self._weights(z, n)
        n_new = n + g * g
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / self.alpha
        z_new = z + (g - sigma * w)
        return {"z": z_new, "n": n_new}, self._weights(z_new, n_new)


class _StoredWeights(_Rule):
    """Optimizers whose state holds the weights themselves as ``w``."""

    state_names: tuple = ("w",)

    def weights(self, state: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        return state["w"][idx]

    def warm(self, state: dict[str, np.ndarray], idx: np.ndarray, w: np.ndarray) -> None:
        """Set coordinates ``idx`` to weights ``w`` with no history."""
        for name in self.state_names:
            state[name][idx] = w if name == "w" else 0.0


class AdaGrad(_StoredWeights):
    """AdaGrad (Duchi et al., 2011) with L2: ``w -= lr * (g + l2 w) / (sqrt(G) + eps)``."""

    name = "adagrad"
    state_names = ("w", "g2")
    boosts = True

    def boost(self, state: dict[str, np.ndarray], factor: float) -> None:
        state["g2"] /= factor * factor

    def __init__(self, lr: float = 0.1, l2: float = 0.0, eps: float = 1e-8):
        self.lr = _check("lr", lr, strict=True)
        self.l2 = _check("l2", l2)
        self.eps = _check("eps", eps, strict=True)

    def init_state(self, size: int) -> dict[str, np.ndarray]:
        return {"w": np.zeros(size), "g2": np.zeros(size)}

    def step(
        self, gathered: dict[str, np.ndarray], g: np.ndarray, w: np.ndarray | None = None
    ) -> tuple[dict, np.ndarray]:
        w = gathered["w"]
        g = g + self.l2 * w
        g2 = gathered["g2"] + g * g
        w = w - self.lr * g / (np.sqrt(g2) + self.eps)
        return {"w": w, "g2": g2}, w


class Sgd(_StoredWeights):
    """Plain SGD with L2: ``w -= lr * (g + l2 w)``."""

    name = "sgd"
    state_names = ("w",)

    def __init__(self, lr: float = 0.01, l2: float = 0.0):
        self.lr = _check("lr", lr, strict=True)
        self.l2 = _check("l2", l2)

    def init_state(self, size: int) -> dict[str, np.ndarray]:
        return {"w": np.zeros(size)}

    def step(
        self, gathered: dict[str, np.ndarray], g: np.ndarray, w: np.ndarray | None = None
    ) -> tuple[dict, np.ndarray]:
        w = gathered["w"]
        w = w - self.lr * (g + self.l2 * w)
        return {"w": w}, w


def combine_sum(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Pushes ``[(idx, g), ...]`` of one clock as one: the gradients summed per coordinate."""
    all_idx = np.concatenate([p[0] for p in parts])
    uniq, inverse = np.unique(all_idx, return_inverse=True)
    g = np.bincount(inverse, weights=np.concatenate([p[1] for p in parts]), minlength=uniq.size)
    return uniq, g


def merge_moments(count, mean, m2, count_b, mean_b, m2_b):
    """Chan et al.'s parallel merge of two sets of (count, mean, sum of squared deviations).

    >>> x, y = np.array([1.0, 2.0, 4.0]), np.array([7.0, 8.0])
    >>> c, m, m2 = merge_moments(3, x.mean(), ((x - x.mean()) ** 2).sum(), 2, y.mean(), 0.5)
    >>> int(c), float(m), round(float(m2 / c), 12), round(float(np.var(np.append(x, y))), 12)
    (5, 4.4, 7.44, 7.44)
    """
    total = count + count_b
    safe = np.where(total > 0, total, 1)
    delta = mean_b - mean
    return total, mean + delta * count_b / safe, m2 + m2_b + delta * delta * count * count_b / safe


# columns of a standardized push: per coordinate the raw gradient and the mini-batch's
# moments of the coordinate's values where present; the last row holds the mini-batch's
# row count (the shard puts the running total there) and its residual sum
G_RAW, B_COUNT, B_MEAN, B_M2 = range(4)
PUSH_COLUMNS = 4
ROWS, RESIDUAL = 4, 5  # the extra columns of a self-contained push
SELF_CONTAINED = 6
NUMERIC_TOL = 1e-12  # present values vary less than this (relatively): a constant, unscaled


def scaling(count, mean, m2, rows) -> tuple[np.ndarray, np.ndarray]:
    """Per coordinate ``(center, scale)`` of standardization over all ``rows`` so far (a
    coordinate absent from a row is 0 there), from the moments of its present values.

    A coordinate whose present values are constant so far is not centred and is divided by
    their magnitude (a one-hot categorical, always +-1, and the intercept stay as they are;
    a number seen once does not take a raw-sized first step); one that a warm start fixed
    (``count < 0``) is left as it is.

    >>> c, s = scaling(np.array([4.0, 2.0, 1.0]), np.array([2.0, 1.0, -300.0]),
    ...                np.array([8.0, 0.0, 0.0]), 4)
    >>> c.tolist(), s.tolist()  # 1, 2, 3 and 4 at every row; a constant 1; -300 once
    ([2.0, 0.0, 0.0], [1.4142135623730951, 1.0, 300.0])
    """
    count = np.asarray(count, np.float64)
    present = np.maximum(count, 1.0)
    numeric = (count > 0) & (m2 / present > NUMERIC_TOL * (1.0 + mean * mean))
    rows = np.maximum(rows, 1.0)
    center = np.where(numeric, count * mean / rows, 0.0)
    var = (m2 + count * mean * mean) / rows - center * center
    ok = numeric & (var > 0)
    # a constant so far is scaled by its magnitude, not centred: one-hot +-1 stays as it is,
    # and a number seen once does not take a raw-sized first step
    constant = np.where(count > 0, np.abs(mean), 1.0)
    constant = np.where(constant > 0, constant, 1.0)
    return np.where(ok, center, 0.0), np.where(ok, np.sqrt(np.where(ok, var, 1.0)), constant)


class Standardized(_Rule):
    """Online standardization of each coordinate around an update rule: the rule learns
    weights ``w'`` over ``(x - center) / scale``, kept with the running moments in the same
    state, so the shards hold the scaler as they hold the weights.

    Its weights are those of the raw values, ``w' / scale``; the centring adds
    ``-sum(offsets)`` to every margin, ``offsets = w' center / scale`` (a shard keeps the sum
    of its coordinates'). ``center`` and ``scale`` move when the coordinate's moments do,
    so a coordinate is rescaled when a mini-batch touches it. A push is the 2-D array of
    ``PUSH_COLUMNS`` (``G_RAW``, ``B_COUNT``, ``B_MEAN``, ``B_M2``) with a last row
    ``(rows so far, residual sum)``; a worker replaying its own pushes (read-my-writes) holds
    them *self-contained*, ``SELF_CONTAINED`` columns with the rows so far and the residual
    sum on every entry (``self_contained``), so any subset of entries applies as the shard
    would.
    """

    moments = ("count", "mean", "m2", "center", "scale")

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.state_names = (*inner.state_names, *self.moments)
        self.boosts = inner.boosts

    def boost(self, state: dict[str, np.ndarray], factor: float) -> None:
        self.inner.boost(self._inner(state), factor)  # the moments stay

    def init_state(self, size: int) -> dict[str, np.ndarray]:
        state = self.inner.init_state(size)
        state.update({k: np.zeros(size) for k in self.moments})
        state["scale"][:] = 1.0
        return state

    def _inner(self, state: dict) -> dict:
        return {k: state[k] for k in self.inner.state_names}

    def weights(self, state: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        return self.inner.weights(state, idx) / _unit(state["scale"][idx])

    def warm(self, state: dict[str, np.ndarray], idx: np.ndarray, w: np.ndarray) -> None:
        """Weights ``w`` on the raw values, fixed unscaled (``count = -1``): a warm start
        scores as its snapshot did."""
        self.inner.warm(state, idx, w)
        state["count"][idx] = -1.0
        for k in ("mean", "m2", "center"):
            state[k][idx] = 0.0
        state["scale"][idx] = 1.0

    def step(
        self, gathered: dict[str, np.ndarray], g: np.ndarray, w: np.ndarray | None = None
    ) -> tuple[dict, np.ndarray]:
        if g.shape[1] == SELF_CONTAINED:
            rows, residual = g[:, ROWS], g[:, RESIDUAL]
        else:
            rows, residual = g[-1, 0], g[-1, 1]
            g = g[:-1]
        count = gathered["count"]
        fixed = count < 0
        c, mean, m2 = merge_moments(
            count, gathered["mean"], gathered["m2"], g[:, B_COUNT], g[:, B_MEAN], g[:, B_M2]
        )
        if fixed.any():  # a warm start's coordinates stay unscaled
            c = np.where(fixed, count, c)
            mean = np.where(fixed, gathered["mean"], mean)
            m2 = np.where(fixed, gathered["m2"], m2)
        center, scale = scaling(c, mean, m2, rows)
        scaled = (g[:, G_RAW] - center * residual) / scale
        new, wp = self.inner.step(self._inner(gathered), scaled)
        new.update(count=c, mean=mean, m2=m2, center=center, scale=scale)
        return new, wp / scale

    def offsets(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Each coordinate's share of the centring, ``w' center / scale``, over ``state``'s
        arrays (whole, or gathered at some coordinates)."""
        every = slice(None)
        return self.inner.weights(state, every) * state["center"] / _unit(state["scale"])

    @staticmethod
    def self_contained(g: np.ndarray) -> np.ndarray:
        """A push (last row: its rows, residual sum) with its rows and its residual sum on
        every entry; ``StateReplica`` turns the rows into running totals when it replays."""
        out = np.empty((g.shape[0] - 1, SELF_CONTAINED))
        out[:, :PUSH_COLUMNS] = g[:-1]
        out[:, ROWS], out[:, RESIDUAL] = g[-1, 0], g[-1, 1]
        return out

    def combine(self, parts: list) -> tuple[np.ndarray, np.ndarray]:
        """Pushes of one clock as one: raw gradients summed, moments merged, rows and
        residuals summed."""
        all_idx = np.concatenate([p[0] for p in parts])
        rows = np.concatenate([p[1][:-1] for p in parts])
        uniq, inv = np.unique(all_idx, return_inverse=True)
        out = np.zeros((uniq.size + 1, PUSH_COLUMNS))
        out[:-1, G_RAW] = np.bincount(inv, rows[:, G_RAW], uniq.size)
        # (float even when every push is empty: bincount of nothing is an int array)
        count = np.bincount(inv, rows[:, B_COUNT], uniq.size).astype(np.float64)
        mean = np.bincount(inv, rows[:, B_COUNT] * rows[:, B_MEAN], uniq.size).astype(np.float64)
        mean /= np.where(count > 0, count, 1)
        dev = rows[:, B_MEAN] - mean[inv]
        m2 = np.bincount(inv, rows[:, B_M2] + rows[:, B_COUNT] * dev * dev, uniq.size)
        out[:-1, B_COUNT], out[:-1, B_MEAN], out[:-1, B_M2] = count, mean, m2
        out[-1, :2] = sum(p[1][-1, :2] for p in parts)
        return uniq, out


def _unit(scale: np.ndarray) -> np.ndarray:
    """Scales with 0 (a never-written coordinate of a zero-filled array) read as 1."""
    return np.where(scale > 0, scale, 1.0)


OPTIMIZERS = {"ftrl": Ftrl, "adagrad": AdaGrad, "sgd": Sgd}


def make_optimizer(name: str, **params: float):
    """Build an optimizer by name, keeping only the hyper-parameters it takes."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    cls = OPTIMIZERS[name]
    accepted = cls.__init__.__code__.co_varnames[1 : cls.__init__.__code__.co_argcount]
    return cls(**{k: v for k, v in params.items() if k in accepted and v is not None})


def make_rule(name: str, standardize: bool = False, **params: float):
    """``make_optimizer``, wrapped in ``Standardized`` when ``standardize``."""
    rule = make_optimizer(name, **params)
    return Standardized(rule) if standardize else rule
