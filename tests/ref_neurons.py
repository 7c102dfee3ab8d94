"""Float64 references for the neurons (csrc/common/neuron.h): forward f(x) and its derivative,
written from the definitions (the derivative from x, independently of how the kernels compute it)."""
import numpy as np


def neuron_fwd(x, kind, a=0.0, b=0.0):
    x = np.asarray(x, np.float64)
    if kind == "ident":
        return x.copy()
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "logistic":
        return 1 / (1 + np.exp(-x))
    if kind == "tanh":
        return a * np.tanh(b * x)
    if kind == "brelu":
        return np.minimum(np.maximum(x, 0), a)
    if kind == "softrelu":
        return np.logaddexp(0, x)
    if kind == "abs":
        return np.abs(x)
    if kind == "square":
        return x * x
    if kind == "sqrt":
        return np.sqrt(x)
    if kind == "linear":
        return a * x + b
    raise ValueError(kind)


def neuron_grad(x, kind, a=0.0, b=0.0):
    """f'(x)."""
    x = np.asarray(x, np.float64)
    if kind == "ident":
        return np.ones_like(x)
    if kind == "relu":
        return (x > 0).astype(np.float64)
    if kind == "logistic":
        s = 1 / (1 + np.exp(-x))
        return s * (1 - s)
    if kind == "tanh":
        return a * b * (1 - np.tanh(b * x) ** 2)
    if kind == "brelu":
        return ((x > 0) & (x < a)).astype(np.float64)
    if kind == "softrelu":
        return 1 / (1 + np.exp(-x))
    if kind == "abs":
        return np.sign(x)
    if kind == "square":
        return 2 * x
    if kind == "sqrt":
        return 0.5 / np.sqrt(x)
    if kind == "linear":
        return np.full_like(x, a)
    raise ValueError(kind)


# (kind, a, b, input sampler) for every kind, with inputs kept away from kinks and outside domains.
CASES = [
    ("ident", 0.0, 0.0, "normal"),
    ("relu", 0.0, 0.0, "away0"),
    ("logistic", 0.0, 0.0, "normal"),
    ("tanh", 1.7159, 0.6667, "normal"),
    ("brelu", 1.5, 0.0, "brelu"),
    ("softrelu", 0.0, 0.0, "wide"),
    ("abs", 0.0, 0.0, "away0"),
    ("square", 0.0, 0.0, "normal"),
    ("sqrt", 0.0, 0.0, "positive"),
    ("linear", 2.5, -0.75, "normal"),
]


def sample(kind_sampler, n, rng):
    x = rng.standard_normal(n) * 2
    if kind_sampler == "away0":
        x = np.where(np.abs(x) < 0.05, x + np.sign(x + 1e-9) * 0.1, x)
    elif kind_sampler == "brelu":
        x = rng.uniform(-1, 3, n)
        for kink in (0.0, 1.5):
            x = np.where(np.abs(x - kink) < 0.05, x + 0.1, x)
    elif kind_sampler == "wide":
        x = rng.standard_normal(n) * 10
    elif kind_sampler == "positive":
        x = rng.uniform(0.1, 4, n)
    return x
