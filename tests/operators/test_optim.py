"""Each update rule against a per-coordinate loop written plainly here."""

import math

import numpy as np
import pytest

from operators.optim import AdaGrad, Ftrl, Sgd, make_optimizer


def ftrl_loop(steps, alpha, beta, l1, l2, size):
    z, n = [0.0] * size, [0.0] * size

    def weight(i):
        if abs(z[i]) <= l1:
            return 0.0
        sign = 1.0 if z[i] > 0 else -1.0
        return -(z[i] - sign * l1) / ((beta + math.sqrt(n[i])) / alpha + l2)

    for idx, grads in steps:
        for i, g in zip(idx, grads, strict=False):
            w = weight(i)
            sigma = (math.sqrt(n[i] + g * g) - math.sqrt(n[i])) / alpha
            z[i] += g - sigma * w
            n[i] += g * g
    return [weight(i) for i in range(size)]


def random_steps(seed, size=50, count=200):
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(count):
        idx = np.unique(rng.integers(0, size, rng.integers(1, 10)))
        steps.append((idx, rng.normal(0, 1, idx.size)))
    return steps


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.5, 0.0), (0.1, 1.0)])
def test_ftrl_matches_the_plain_loop(l1, l2):
    steps = random_steps(1)
    opt = Ftrl(alpha=0.1, beta=1.0, l1=l1, l2=l2)
    state = opt.init_state(50)
    for idx, g in steps:
        opt.apply(state, idx, g)
    expected = ftrl_loop(steps, 0.1, 1.0, l1, l2, 50)
    np.testing.assert_allclose(opt.weights(state, np.arange(50)), expected, rtol=0, atol=1e-12)


def test_adagrad_matches_the_plain_loop():
    steps = random_steps(2)
    opt = AdaGrad(lr=0.2, l2=0.01)
    state = opt.init_state(50)
    w, g2 = [0.0] * 50, [0.0] * 50
    for idx, grads in steps:
        opt.apply(state, idx, grads)
        for i, g in zip(idx, grads, strict=False):
            g = g + 0.01 * w[i]
            g2[i] += g * g
            w[i] -= 0.2 * g / (math.sqrt(g2[i]) + 1e-8)
    np.testing.assert_allclose(state["w"], w, rtol=0, atol=1e-12)


def test_sgd_matches_the_plain_loop():
    steps = random_steps(3)
    opt = Sgd(lr=0.05, l2=0.1)
    state = opt.init_state(50)
    w = [0.0] * 50
    for idx, grads in steps:
        opt.apply(state, idx, grads)
        for i, g in zip(idx, grads, strict=False):
            w[i] -= 0.05 * (g + 0.1 * w[i])
    np.testing.assert_allclose(state["w"], w, rtol=0, atol=1e-12)


def test_ftrl_l1_keeps_weights_exactly_zero():
    opt = Ftrl(alpha=0.1, l1=100.0)
    state = opt.init_state(3)
    assert opt.apply(state, np.array([0, 1, 2]), np.array([1.0, -2.0, 3.0])).tolist() == [0, 0, 0]


def test_hyper_parameters_are_validated_by_name():
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        Ftrl(alpha=0)
    with pytest.raises(ValueError, match="l1 must be a finite number >= 0, got -1"):
        Ftrl(l1=-1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("adam")
    assert make_optimizer("sgd", lr=0.5, alpha=9).lr == 0.5
