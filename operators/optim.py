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


def _check(name: str, value: float, low: float = 0.0, strict: bool = False) -> float:
    ok = value > low if strict else value >= low
    if not (isinstance(value, (int, float)) and np.isfinite(value) and ok):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {low:g}, got {value!r}")
    return float(value)


class _Rule:
    """What every update rule shares: ``apply`` in place, by way of its ``step``."""

    state_names: tuple = ()

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

    def __init__(self, alpha: float = 0.05, beta: float = 1.0, l1: float = 0.0, l2: float = 0.0):
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
            raise ValueError("an FTRL warm start needs beta > 0 or l2 > 0")
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


OPTIMIZERS = {"ftrl": Ftrl, "adagrad": AdaGrad, "sgd": Sgd}


def make_optimizer(name: str, **params: float):
    """Build an optimizer by name, keeping only the hyper-parameters it takes."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    cls = OPTIMIZERS[name]
    accepted = cls.__init__.__code__.co_varnames[1 : cls.__init__.__code__.co_argcount]
    return cls(**{k: v for k, v in params.items() if k in accepted and v is not None})
