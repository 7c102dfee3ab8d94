import numpy as np
import pytest

import convnet
from convnet import ops

from gradcheck import assert_close, assert_grad, tensor_at
from isa_paths import isa  # noqa: F401  (fixture)
import ref_softmax as ref

SHAPES = [(1, 1), (5, 3), (10, 1), (37, 33), (1000, 7), (11, 12)]  # N % 4 == 0: float4


def make(rng, k, n, spread=3.0):
    x = (rng.standard_normal((k, n)) * spread).astype(np.float32)
    labels = rng.integers(0, k, n).astype(np.int32)
    return x, labels


def test_reference_gradients(rng):
    x, labels = make(rng, 6, 4, spread=1.0)  # moderate p: -1/p is well conditioned
    x = x.astype(np.float64)
    dp = rng.standard_normal(x.shape)
    assert_grad(ref.softmax, x, dp, ref.softmax_bwd(dp, ref.softmax(x)))
    # d(scale * sum nll)/dx = scale * (p - onehot)
    assert_grad(lambda t: 0.25 * ref.nll_from_logits(t, labels), x, np.ones(4),
                ref.xent_bwd(ref.softmax(x), labels, 0.25))
    p = ref.softmax(x)
    assert_grad(lambda q: 0.5 * ref.logreg_nll(q, labels), p, np.ones(4),
                ref.logreg_bwd(p, labels, 0.5))


@pytest.mark.parametrize("k,n", SHAPES)
def test_softmax_fwd_bwd(device, rng, k, n):
    x, _ = make(rng, k, n)
    p = ops.softmax(convnet.tensor(x, device))
    pr = ref.softmax(x)
    assert_close(p.numpy(), pr, rtol=1e-5, atol=1e-7, what="softmax")
    dp = rng.standard_normal((k, n)).astype(np.float32)
    dx = ops.softmax_bwd(convnet.tensor(dp, device), p)
    assert_close(dx.numpy(), ref.softmax_bwd(dp, p.numpy().astype(np.float64)), rtol=1e-5,
                 atol=1e-6, what="softmax_bwd")
    prev = rng.standard_normal((k, n)).astype(np.float32)
    acc = convnet.tensor(prev, device)
    ops.softmax_bwd(convnet.tensor(dp, device), p, out=acc, accumulate=True)
    assert_close(acc.numpy(), prev + dx.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k,n", SHAPES)
def test_softmax_xent(device, rng, k, n):
    x, labels = make(rng, k, n)
    tl = convnet.tensor(labels, device)
    probs, s = ops.softmax_xent_fwd(convnet.tensor(x, device), tl)
    assert_close(probs.numpy(), ref.softmax(x), rtol=1e-5, atol=1e-7, what="probs")
    want = ref.stats(ref.nll_from_logits(x, labels), ref.rank(x, labels))
    assert s["top1"] == want["top1"] and s["top5"] == want["top5"]
    assert abs(s["logprob"] - want["logprob"]) <= 1e-5 * max(1.0, abs(want["logprob"])) + 1e-5 * n
    dx = ops.softmax_xent_bwd(probs, tl, 1.0 / n)
    assert_close(dx.numpy(), ref.xent_bwd(probs.numpy().astype(np.float64), labels, 1.0 / n),
                 rtol=1e-6, atol=1e-8, what="xent_bwd")
    prev = rng.standard_normal((k, n)).astype(np.float32)
    acc = convnet.tensor(prev, device)
    ops.softmax_xent_bwd(probs, tl, 1.0 / n, out=acc, accumulate=True)
    assert_close(acc.numpy(), prev + dx.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k,n", SHAPES)
def test_logreg(device, rng, k, n):
    x, labels = make(rng, k, n)
    p = ref.softmax(x).astype(np.float32)
    tp, tl = convnet.tensor(p, device), convnet.tensor(labels, device)
    s = ops.logreg_cost(tp, tl)
    want = ref.stats(ref.logreg_nll(p, labels), ref.rank(p, labels))
    assert s["top1"] == want["top1"] and s["top5"] == want["top5"]
    assert abs(s["logprob"] - want["logprob"]) <= 1e-5 * max(1.0, abs(want["logprob"]))
    g = ops.logreg_bwd(tp, tl, 0.5)
    assert_close(g.numpy(), ref.logreg_bwd(p, labels, 0.5), rtol=1e-6, atol=0, what="logreg_bwd")
    prev = rng.standard_normal((k, n)).astype(np.float32)
    acc = convnet.tensor(prev, device)
    ops.logreg_bwd(tp, tl, 0.5, out=acc, accumulate=True)
    assert_close(acc.numpy(), prev + g.numpy(), rtol=1e-6, atol=1e-6)


def test_cost_gradients_vector_and_scalar_paths_bit_identical(device, rng):
    """N % 4 == 0 in 16-byte aligned buffers takes 4 images a thread (float4 on CUDA); the same
    probabilities one float into their buffer take the scalar path: the same bits, and the
    references' values, for both cost gradients, accumulate included."""
    x, labels = make(rng, 13, 8)
    p = ref.softmax(x).astype(np.float32)
    tl = convnet.tensor(labels, device)
    prev = rng.standard_normal(p.shape).astype(np.float32)
    runs = []
    for offset in (0, 1):
        tp = tensor_at(p, device, offset)
        out = []
        for bwd in (ops.softmax_xent_bwd, ops.logreg_bwd):
            acc = tensor_at(prev, device, offset)
            bwd(tp, tl, 0.25, out=acc, accumulate=True)
            out += [bwd(tp, tl, 0.25).numpy(), acc.numpy()]
        runs.append(out)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    p64 = p.astype(np.float64)
    assert_close(runs[0][0], ref.xent_bwd(p64, labels, 0.25), rtol=1e-6, atol=1e-8)
    assert_close(runs[0][2], ref.logreg_bwd(p, labels, 0.25), rtol=1e-6, atol=0)
    assert_close(runs[0][1], prev + runs[0][0], rtol=1e-6, atol=1e-7)


def test_large_logits_are_stable(device):
    x = np.array([[1e4, -1e4, 0], [1e4 - 1, 1e4, 0], [-3e38, 3e38, 0]], np.float32)
    labels = np.array([1, 0, 0], np.int32)
    probs, s = ops.softmax_xent_fwd(convnet.tensor(x, device), convnet.tensor(labels, device))
    p = probs.numpy()
    assert np.all(np.isfinite(p))
    assert_close(p, ref.softmax(x), rtol=1e-5, atol=1e-7)
    # nll of image 0: label logit 1e4 - 1 against a max of 1e4, about 1.3133; image 1: about 3e38,
    # finite although p[label] underflows to 0; image 2: ln 3.
    want = ref.nll_from_logits(x, labels).sum()
    assert np.isfinite(s["logprob"]) and abs(s["logprob"] - want) < 1e-3 * want
    assert s["top1"] == 2


def test_ties_count_for_the_label(device):
    # Every class tied: the label is a top-1 hit. Five classes above the label: a top-5 miss.
    x = np.zeros((10, 2), np.float32)
    x[:5, 1] = 1.0
    labels = np.array([3, 7], np.int32)
    _, s = ops.softmax_xent_fwd(convnet.tensor(x, device), convnet.tensor(labels, device))
    assert s["top1"] == 1 and s["top5"] == 1


@pytest.mark.parametrize("op", ["softmax_xent_fwd", "softmax_xent_bwd", "logreg_fwd",
                                "logreg_bwd"])
@pytest.mark.parametrize("bad", [-1, 10])
def test_bad_labels(device, op, bad):
    p = convnet.tensor(np.full((10, 4), 0.1, np.float32), device)
    labels = convnet.tensor(np.array([0, 9, bad, bad], np.int32), device)
    msg = rf"{op}: labels\[2\] = {bad} is not a class index in \[0, 10\)"
    with pytest.raises(ValueError, match=msg):
        if op == "softmax_xent_fwd":
            ops.softmax_xent_fwd(p, labels)
        elif op == "softmax_xent_bwd":
            ops.softmax_xent_bwd(p, labels, 1.0)
        elif op == "logreg_fwd":
            ops.logreg_cost(p, labels)
        else:
            ops.logreg_bwd(p, labels, 1.0)


def test_bad_arguments(device):
    x = convnet.zeros((10, 4), device=device)
    with pytest.raises(ValueError, match=r"softmax: x must be \(classes, images\), got shape \(40,\)"):
        ops.softmax(convnet.zeros(40, device=device))
    with pytest.raises(ValueError, match=r"softmax_xent_fwd: labels has shape \(3,\), expected \(4\)"):
        ops.softmax_xent_fwd(x, convnet.zeros(3, np.int32, device=device))
    with pytest.raises(TypeError, match="softmax_xent_fwd: labels must be int32, got float32"):
        ops.softmax_xent_fwd(x, convnet.zeros(4, device=device))
    with pytest.raises(ValueError, match=r"softmax_bwd: dx has shape \(4, 10\), expected \(10, 4\)"):
        ops.softmax_bwd(x, x, out=convnet.zeros((4, 10), device=device))
    with pytest.raises(ValueError, match="needs at least one class"):
        ops.softmax(convnet.zeros((0, 4), device=device))
    with pytest.raises(TypeError, match=r"labels: numpy array has dtype int64"):
        ops.softmax_xent_fwd(np.zeros((10, 4), np.float32), np.zeros(4, np.int64))


@pytest.mark.parametrize("k,n", [(1000, 64 + 16 + 7), (3, 200), (40, 16)])
def test_cpu_paths(isa, rng, k, n):
    """Each SIMD path: the AVX-512 kernel's 64- and 16-image blocks and the loop body's
    remainder, split over threads (1000 x 87: two threads), with very negative logits (e^x
    underflowing to subnormals and 0), a NaN logit (its image's probabilities are NaN, the
    others unaffected) and ties with the label's logit."""
    x, labels = make(rng, k, n, spread=30.0)
    x[:, 1] = -1e30
    x[0, 1] = 0.0
    x[:, 2] = 5.0  # all tied: rank 0
    x[k // 2, 3] = np.nan
    probs, stats = ops.softmax_xent_fwd(x, labels)
    keep = np.ones(n, bool)
    keep[3] = False
    pr = ref.softmax(x[:, keep])
    assert_close(probs.numpy()[:, keep], pr, rtol=1e-5, atol=1e-7, what=f"{isa} probs")
    assert np.isnan(probs.numpy()[:, 3]).all()
    assert_close(ops.softmax(x).numpy()[:, keep], pr, rtol=1e-5, atol=1e-7, what=f"{isa} softmax")
    nll = ref.nll_from_logits(x[:, keep], labels[keep])
    r = ref.rank(x[:, keep], labels[keep])
    want = ref.stats(nll, r)
    got_nll = stats["logprob"]
    assert np.isnan(got_nll)  # the NaN image's cost
    _, stats = ops.softmax_xent_fwd(x[:, keep].copy(), labels[keep])
    assert abs(stats["logprob"] - want["logprob"]) <= 1e-5 * abs(want["logprob"]) + 1e-4
    assert (stats["top1"], stats["top5"]) == (want["top1"], want["top5"])
