import numpy as np
import pytest

import convnet
from convnet import ops

import ref_norm_pool as ref
from gradcheck import assert_close, assert_grad, tensor_at
from isa_paths import isa  # noqa: F401  (fixture)

# (C, H, W, N, size): odd and even windows at the channel edges, C smaller than the window,
# batch 1, non-square images, size 1.
SHAPES = [
    (5, 3, 4, 1, 5),
    (7, 5, 3, 3, 4),
    (3, 2, 2, 2, 7),
    (8, 3, 5, 2, 2),
    (6, 1, 1, 5, 1),
    (4, 2, 3, 1, 6),
    (6, 3, 5, 4, 3),  # N % 4 == 0: 4 images a thread on CUDA
]
# (pow, min_div): AlexNet's 0.75 and the other fast paths, and the general exp/log path.
POWS = [(0.75, 2.0), (0.5, 1.0), (1.0, 2.0), (0.6, 1.5)]


def _x(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _cc_alpha(kind, size, scale):
    return scale / size if kind == "lrn" else scale / size**2


OPS = {"lrn": (ops.lrn_fwd, ops.lrn_bwd, ref.lrn_fwd, ref.lrn_bwd),
       "rnorm": (ops.rnorm_fwd, ops.rnorm_bwd, ref.rnorm_fwd, ref.rnorm_bwd)}


@pytest.mark.parametrize("kind", ["lrn", "rnorm"])
@pytest.mark.parametrize("shape", [(4, 3, 2, 2, 3), (5, 2, 3, 1, 4), (2, 3, 3, 2, 5)])
def test_reference_gradient(kind, shape, rng):
    *xs, size = shape
    _, _, fwd, bwd = OPS[kind]
    x = rng.standard_normal(xs) * 3
    dy = rng.standard_normal(xs)
    alpha, beta, k = 0.05, 0.75, 1.5
    assert_grad(lambda v: fwd(v, size, alpha, beta, k)[0], x, dy, bwd(dy, x, size, alpha, beta, k))


@pytest.mark.parametrize("kind", ["lrn", "rnorm"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("pow_k", POWS, ids=lambda p: f"pow{p[0]}")
def test_matches_reference(device, rng, kind, shape, pow_k):
    *xs, size = shape
    beta, k = pow_k
    fwd, bwd, rfwd, rbwd = OPS[kind]
    scale = 0.5 if kind == "lrn" else 2.0  # large enough that the window sum matters
    alpha = _cc_alpha(kind, size, scale)
    x, dy = _x(rng, xs, 3), _x(rng, xs)
    ry, rd = rfwd(x, size, alpha, beta, k)
    rdx = rbwd(dy, x, size, alpha, beta, k)
    tx, tdy = convnet.tensor(x, device), convnet.tensor(dy, device)
    y, d = fwd(tx, size, scale, beta, k)
    assert_close(d.numpy(), rd, rtol=1e-5, what=f"{kind} denoms")
    assert_close(y.numpy(), ry, rtol=1e-5, what=f"{kind} y")
    dx = bwd(tdy, tx, y, d, size, scale, beta)
    assert_close(dx.numpy(), rdx, rtol=1e-5, what=f"{kind} dx")
    # accumulate adds to what is there
    acc = _x(rng, xs)
    out = convnet.tensor(acc, device)
    bwd(tdy, tx, y, d, size, scale, beta, out=out, accumulate=True)
    assert_close(out.numpy(), rdx + acc, rtol=1e-5, what=f"{kind} dx accumulated")


@pytest.mark.parametrize("kind", ["lrn", "rnorm"])
@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_vector_and_scalar_paths_bit_identical(device, rng, kind, beta):
    """N % 4 == 0 in 16-byte aligned buffers takes 4 images a thread (float4 on CUDA); the same
    data one float into its buffers takes the scalar path: the same bits, forward, backward and
    accumulated, and the reference's values."""
    fwd, bwd, rfwd, rbwd = OPS[kind]
    xs, size, scale = (5, 3, 4, 8), 3, 0.5
    x, dy, acc = _x(rng, xs, 3), _x(rng, xs), _x(rng, xs)
    runs = []
    for offset in (0, 1):
        tx, tdy = tensor_at(x, device, offset), tensor_at(dy, device, offset)
        y, d = fwd(tx, size, scale, beta, 2.0)
        dx = bwd(tdy, tx, y, d, size, scale, beta)
        out = tensor_at(acc, device, offset)
        bwd(tdy, tx, y, d, size, scale, beta, out=out, accumulate=True)
        runs.append([y.numpy(), d.numpy(), dx.numpy(), out.numpy()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    alpha = _cc_alpha(kind, size, scale)
    assert_close(runs[0][0], rfwd(x, size, alpha, beta, 2.0)[0], rtol=1e-5, what=f"{kind} y")
    rdx = rbwd(dy, x, size, alpha, beta, 2.0)
    assert_close(runs[0][2], rdx, rtol=1e-5, what=f"{kind} dx")
    assert_close(runs[0][3], rdx + acc, rtol=1e-5, what=f"{kind} dx accumulated")


@pytest.mark.parametrize("kind", ["lrn", "rnorm"])
def test_cpu_simd_paths_agree(rng, kind):
    """Every SIMD path the CPU can run gives the reference's answer (large enough to go
    through the tiles and both threads)."""
    cpu = convnet.device.module_for("cpu")
    fwd, bwd, rfwd, rbwd = OPS[kind]
    xs, size = ((37, 11, 13, 24), 5) if kind == "lrn" else ((6, 23, 19, 16), 3)
    x, dy = _x(rng, xs, 3), _x(rng, xs)
    alpha = _cc_alpha(kind, size, 1e-2)
    ry, _ = rfwd(x, size, alpha, 0.75, 2.0)
    rdx = rbwd(dy, x, size, alpha, 0.75, 2.0)
    paths = ["portable", "avx2", "avx512"]
    paths = paths[:paths.index(cpu.isa_supported()) + 1]
    previous = cpu.isa()
    try:
        for path in paths:
            cpu.set_isa(path)
            y, d = fwd(x, size, 1e-2, 0.75, 2.0)
            dx = bwd(dy, x, y, d, size, 1e-2, 0.75)
            assert_close(y.numpy(), ry, rtol=1e-5, what=f"{path} y")
            assert_close(dx.numpy(), rdx, rtol=1e-5, what=f"{path} dx")
    finally:
        cpu.set_isa(previous)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_loop_tails_take_the_blocks_operations(isa, rng, beta):
    """The CPU's pow and division loops run 8 lanes at a time and their last n % 8 elements in
    a padded block: with a 1-channel window each element is on its own, so a value gives the
    same bits in a loop's tail (13 elements: 8 + 5) as in a whole block, forward, backward and
    accumulated."""
    v, g, acc = _x(rng, 13, 3), _x(rng, 13), _x(rng, 13)
    rows = {}
    for name, order in (("tail", np.arange(13)), ("block", np.r_[8:13, 0:3])):
        x, dy, out = (a[order].reshape(1, 1, 1, -1).copy() for a in (v, g, acc))
        y, d = ops.lrn_fwd(x, 1, 0.5, beta, 2.0)
        dx = ops.lrn_bwd(dy, x, y, d, 1, 0.5, beta)
        ops.lrn_bwd(dy, x, y, d, 1, 0.5, beta, out=out, accumulate=True)
        rows[name] = [t.numpy().ravel() if hasattr(t, "numpy") else t.ravel()
                      for t in (y, d, dx, out)]
    for tail, block in zip(rows["tail"], rows["block"]):
        np.testing.assert_array_equal(tail[8:13], block[0:5])


def test_general_pow_accuracy(rng):
    """The polynomial exp2/log2 path over a wide range of denominators: relative error within
    a float32 rounding of z = -beta*log2(d) (what 2^z amplifies), plus a few ulps."""
    x = np.geomspace(1e-3, 1e4, 4096).astype(np.float32).reshape(1, 1, 1, -1)
    for beta in (0.3, 0.6, 1.7, 2.5):
        y, d = ops.lrn_fwd(x, 1, 1.0, beta, 1.0)
        d64 = 1.0 + x.astype(np.float64) ** 2
        expect = x * d64 ** -beta
        rel = np.abs(y.numpy() / expect - 1)
        bound = 3e-7 + 0.7 * 2.0**-23 * np.abs(beta * np.log2(d64))
        assert np.all(rel <= bound), f"beta {beta}: worst {np.max(rel / bound):.2f} x bound"


def test_deterministic(device, rng):
    x = _x(rng, (9, 4, 5, 3), 3)
    dy = _x(rng, x.shape)
    runs = []
    for _ in range(2):
        tx = convnet.tensor(x, device)
        y, d = ops.lrn_fwd(tx, 5, 1e-2, 0.75, 2.0)
        dx = ops.lrn_bwd(convnet.tensor(dy, device), tx, y, d, 5, 1e-2, 0.75)
        runs.append((y.numpy(), dx.numpy()))
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)


def test_parameterisations(rng):
    """cuda-convnet's scale is divided by size; the paper's alpha is not."""
    x = _x(rng, (6, 2, 2, 3), 10)
    sq = np.zeros_like(x, dtype=np.float64)
    for c in range(6):
        lo, hi = ref.window(c, 5, 6)
        sq[c] = np.sum(x[lo:hi].astype(np.float64) ** 2, axis=0)
    _, d_cc = ops.lrn_fwd(x, 5, 1e-4, 0.75, 2.0)
    np.testing.assert_allclose(d_cc.numpy(), 2 + 2e-5 * sq, rtol=1e-6)
    params = ops.lrn_params_from_paper(k=2, n=5, alpha=1e-4, beta=0.75)
    _, d_paper = ops.lrn_fwd(x, **params)
    np.testing.assert_allclose(d_paper.numpy(), 2 + 1e-4 * sq, rtol=1e-6)
    _, d_r = ops.rnorm_fwd(x, 3, 9e-2, 0.75, 1.0)
    _, rd = ref.rnorm_fwd(x, 3, 1e-2, 0.75, 1.0)
    np.testing.assert_allclose(d_r.numpy(), rd, rtol=1e-6)


def test_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = _x(rng, (10, 5, 6, 4), 5)  # (C, H, W, N)
    y, _ = ops.lrn_fwd(x, 5, 1e-3, 0.75, 2.0)
    t = torch.nn.functional.local_response_norm(torch.from_numpy(x.transpose(3, 0, 1, 2).copy()),
                                                size=5, alpha=1e-3, beta=0.75, k=2.0)
    np.testing.assert_allclose(y.numpy(), t.numpy().transpose(1, 2, 3, 0), rtol=1e-5, atol=1e-6)


def test_bad_arguments(device):
    x = convnet.zeros((4, 3, 3, 2), device=device)
    with pytest.raises(ValueError, match=r"lrn_fwd: y has shape \(4, 3, 3, 1\), expected "
                                         r"\(4, 3, 3, 2\)"):
        ops.lrn_fwd(x, 5, 1e-4, 0.75, 2.0, out=convnet.zeros((4, 3, 3, 1), device=device))
    with pytest.raises(ValueError, match="lrn_fwd: x must have 4 dimensions, got shape"):
        ops.lrn_fwd(convnet.zeros((4, 9), device=device), 5, 1e-4, 0.75, 2.0)
    with pytest.raises(TypeError, match="rnorm_fwd: x must be float32, got int32"):
        ops.rnorm_fwd(convnet.zeros((4, 3, 3, 2), np.int32, device=device), 3, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError, match="lrn_fwd: size must be >= 1, got 0"):
        ops.lrn_fwd(x, 0, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError, match="lrn_fwd: min_div must be a positive normal float"):
        ops.lrn_fwd(x, 5, 1e-4, 0.75, 0.0)
    with pytest.raises(ValueError, match=r"lrn_fwd: alpha \(scale\) must be finite and >= 0"):
        ops.lrn_fwd(x, 5, -1.0, 0.75, 2.0)
    with pytest.raises(ValueError, match="lrn_fwd: output y overlaps input x"):
        ops.lrn_fwd(x, 5, 1e-4, 0.75, 2.0, out=x)
    y, d = ops.lrn_fwd(x, 5, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError, match=r"lrn_bwd: denoms has shape \(4, 3, 3\), expected"):
        ops.lrn_bwd(y, x, y, convnet.zeros((4, 3, 3), device=device), 5, 1e-4, 0.75)
    with pytest.raises(ValueError, match="rnorm_bwd: output dx overlaps input dy"):
        ops.rnorm_bwd(y, x, y, d, 3, 1e-4, 0.75, out=y)


def test_bad_numpy_and_devices():
    x = np.zeros((4, 3, 3, 2), np.float32)
    with pytest.raises(ValueError, match="lrn_fwd: x: numpy array of shape .* not C-contiguous"):
        ops.lrn_fwd(np.zeros((4, 3, 3, 4), np.float32)[..., ::2], 5, 1e-4, 0.75, 2.0)
    if "emu" in convnet.backends():
        with pytest.raises(ValueError, match="lrn_fwd"):
            ops.lrn_fwd(x, 5, 1e-4, 0.75, 2.0, out=convnet.zeros(x.shape, device="emu:0"))
