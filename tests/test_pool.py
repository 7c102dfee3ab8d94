import numpy as np
import pytest

import convnet
from convnet import ops

import ref_norm_pool as ref
from gradcheck import assert_close, assert_grad, tensor_at
from isa_paths import isa  # noqa: F401  (fixture)

# (C, H, W, N, size, stride, start, outputs)
CASES = [
    (2, 7, 9, 3, 3, 2, 0, None),    # overlapping 3/2, non-square, last window overhangs
    (3, 13, 13, 2, 3, 2, 0, None),  # pool5-like: 13 -> 6
    (2, 27, 27, 1, 3, 2, 0, None),  # pool2-like: 27 -> 13, batch 1
    (2, 8, 6, 1, 3, 3, 0, None),    # non-overlapping, overhang: 8 -> 3
    (2, 7, 7, 2, 3, 2, -1, None),   # start < 0: first window hangs before the image
    (1, 5, 5, 4, 2, 3, 0, None),    # stride > size: a row and column no window reaches
    (2, 6, 7, 3, 4, 1, 0, None),    # stride 1, even window
    (1, 1, 1, 3, 1, 1, 0, None),    # 1x1
    (2, 9, 9, 2, 3, 2, 0, 5),       # cuda-convnet's explicit outputsX beyond the computed 4
    (3, 4, 5, 2, 5, 2, -2, None),   # window larger than the image
    (2, 7, 9, 8, 3, 2, 0, None),    # batch 8: the float4 forward and backward (4 images a
    (2, 7, 6, 4, 3, 2, -1, None),   # thread); batch 4 with a window before the image
]


def _ids(case):
    c, h, w, n, size, stride, start, outs = case
    return f"{c}x{h}x{w}x{n}-s{size}/{stride}@{start}" + (f"-o{outs}" if outs else "")


def _distinct(rng, shape):
    """Values far apart (no ties, finite differences cannot swap the argmax)."""
    v = rng.permutation(int(np.prod(shape))).astype(np.float64) * 0.01
    return v.reshape(shape)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("case", [CASES[i] for i in (0, 3, 4, 5, 6, 9)], ids=_ids)
def test_reference_gradient(rng, mode, case):
    c, h, w, n, size, stride, start, outs = case
    x = _distinct(rng, (c, h, w, n))
    y = ref.pool_fwd(x, mode, size, stride, start, outs)
    dy = rng.standard_normal(y.shape)
    assert_grad(lambda v: ref.pool_fwd(v, mode, size, stride, start, outs), x, dy,
                ref.pool_bwd(dy, x, mode, size, stride, start), eps=1e-4)


def test_output_sizes():
    assert ops.pool_output_shape((96, 55, 55, 128), 3, 2) == (96, 27, 27, 128)
    assert ops.pool_output_shape((256, 27, 27, 128), 3, 2) == (256, 13, 13, 128)
    assert ops.pool_output_shape((256, 13, 13, 128), 3, 2) == (256, 6, 6, 128)
    assert ops.pool_output_shape((3, 32, 32, 8), 3, 2) == (3, 16, 16, 8)  # rounds up
    assert ops.pool_output_shape((3, 9, 7, 1), 3, 2, 0, (5, 4)) == (3, 5, 4, 1)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_reference(device, rng, mode, case):
    c, h, w, n, size, stride, start, outs = case
    x = rng.standard_normal((c, h, w, n)).astype(np.float32)
    ry = ref.pool_fwd(x, mode, size, stride, start, outs)
    dy = rng.standard_normal(ry.shape).astype(np.float32)
    rdx = ref.pool_bwd(dy, x, mode, size, stride, start)
    tx, tdy = convnet.tensor(x, device), convnet.tensor(dy, device)
    y = ops.pool_fwd(tx, mode, size, stride, start, outputs=outs)
    assert_close(y.numpy(), ry, rtol=1e-6, what=f"{mode} y")
    if mode == "max":
        np.testing.assert_array_equal(y.numpy(), ry.astype(np.float32))
    dx = ops.pool_bwd(tdy, tx, y, mode, size, stride, start)
    assert_close(dx.numpy(), rdx, rtol=1e-6, what=f"{mode} dx")
    acc = rng.standard_normal(x.shape).astype(np.float32)
    out = convnet.tensor(acc, device)
    ops.pool_bwd(tdy, tx, y if mode == "max" else None, mode, size, stride, start, out=out,
                 accumulate=True)
    assert_close(out.numpy(), rdx + acc, rtol=1e-6, what=f"{mode} dx accumulated")


@pytest.mark.parametrize("case", [(2, 7, 9, 3, 3, 2, 0), (1, 6, 6, 5, 4, 1, -1)])
def test_max_ties_go_to_first_pixel(device, rng, case):
    """Integer inputs with many ties: dy goes to the first tied pixel (row-major), each once."""
    c, h, w, n, size, stride, start = case
    x = rng.integers(0, 3, (c, h, w, n)).astype(np.float32)
    x[0] = 1.0  # a whole channel of ties
    y = ops.pool_fwd(convnet.tensor(x, device), "max", size, stride, start)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ops.pool_bwd(convnet.tensor(dy, device), convnet.tensor(x, device), y, "max", size,
                      stride, start).numpy()
    assert_close(dx, ref.pool_bwd(dy, x, "max", size, stride, start), rtol=1e-6, what="ties")
    np.testing.assert_allclose(dx.sum(axis=(1, 2)), dy.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    again = ops.pool_bwd(convnet.tensor(dy, device), convnet.tensor(x, device), y, "max", size,
                         stride, start).numpy()
    np.testing.assert_array_equal(dx, again)


@pytest.mark.parametrize("images", [16, 37])
def test_cpu_max_backward_image_blocks(isa, rng, images):
    """The CPU's max backward routes whole blocks of 16 images, then the rest one mask in memory
    (csrc/cpu/pool_kernels.h): with many ties, each image's dx has the reference's values and the
    bits of that image pooled alone (a batch of 1: no whole block), with and without the fused
    ReLU + bias gradient."""
    x = rng.integers(0, 3, (3, 9, 8, images)).astype(np.float32)
    y = ops.pool_fwd(x, "max", 3, 2)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ops.pool_bwd(dy, x, y, "max", 3, 2).numpy()
    db = np.empty(3, np.float32)
    dx_fused = ops.pool_bwd(dy, x, y, "max", 3, 2, relu_bias=db).numpy()
    assert_close(dx, ref.pool_bwd(dy, x, "max", 3, 2), rtol=1e-6, what=f"{isa} dx")
    np.testing.assert_array_equal(dx_fused, np.where(x > 0, dx, 0))
    for n in (0, images // 2, images - 1):
        xn, dyn = np.ascontiguousarray(x[..., n:n + 1]), np.ascontiguousarray(dy[..., n:n + 1])
        alone = ops.pool_bwd(dyn, xn, ops.pool_fwd(xn, "max", 3, 2), "max", 3, 2).numpy()
        np.testing.assert_array_equal(dx[..., n:n + 1], alone)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_vector_and_scalar_paths_bit_identical(device, rng, mode):
    """N % 4 == 0 in 16-byte aligned buffers takes 4 images a thread (float4 on CUDA), each image
    with its own tie scan; the same data one float into its buffers takes the scalar path. Small
    integers make ties in most windows, different in each image: the same bits both ways, and
    the reference's values."""
    x = rng.integers(0, 3, (3, 7, 6, 8)).astype(np.float32)
    size, stride, start = 3, 2, -1
    y_ref = ref.pool_fwd(x.astype(np.float64), mode, size, stride, start)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    acc = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for offset in (0, 1):
        tx, tdy = tensor_at(x, device, offset), tensor_at(dy, device, offset)
        y = ops.pool_fwd(tx, mode, size, stride, start)
        dx = ops.pool_bwd(tdy, tx, y, mode, size, stride, start)
        out = tensor_at(acc, device, offset)
        ops.pool_bwd(tdy, tx, y, mode, size, stride, start, out=out, accumulate=True)
        runs.append([y.numpy(), dx.numpy(), out.numpy()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    rdx = ref.pool_bwd(dy.astype(np.float64), x.astype(np.float64), mode, size, stride, start)
    assert_close(runs[0][0], y_ref, what="y")
    assert_close(runs[0][1], rdx, what="dx")
    assert_close(runs[0][2], rdx + acc, what="dx accumulated")


def test_cpu_simd_paths_agree(rng):
    cpu = convnet.device.module_for("cpu")
    x = rng.standard_normal((16, 27, 27, 24)).astype(np.float32)
    paths = ["portable", "avx2", "avx512"]
    paths = paths[:paths.index(cpu.isa_supported()) + 1]
    previous = cpu.isa()
    try:
        results = []
        for path in paths:
            cpu.set_isa(path)
            for mode in ("max", "avg"):
                y = ops.pool_fwd(x, mode, 3, 2)
                dx = ops.pool_bwd(np.ones(y.shape, np.float32), x, y, mode, 3, 2)
                results.append((path, mode, y.numpy().copy(), dx.numpy().copy()))
    finally:
        cpu.set_isa(previous)
    for path, mode, y, dx in results:
        assert_close(y, ref.pool_fwd(x, mode, 3, 2), rtol=1e-6, what=f"{path} {mode} y")
        assert_close(dx, ref.pool_bwd(np.ones(y.shape), x, mode, 3, 2), rtol=1e-6,
                     what=f"{path} {mode} dx")


def test_bad_arguments(device):
    x = convnet.zeros((2, 7, 7, 3), device=device)
    with pytest.raises(ValueError, match="pool_fwd: mode must be 'max' or 'avg', got 'min'"):
        ops.pool_fwd(x, "min", 3, 2)
    with pytest.raises(ValueError, match=r"pool_fwd: y has shape \(2, 2, 2, 3\), expected "
                                         r"\(2, 3, 3, 3\)"):
        ops.pool_fwd(x, "max", 3, 2, out=convnet.zeros((2, 2, 2, 3), device=device))
    with pytest.raises(ValueError, match="pool_fwd: size and stride must be >= 1"):
        ops.pool_fwd(x, "max", 3, 0, outputs=3)
    with pytest.raises(ValueError, match="pool_fwd: 5 windows of size 3, stride 2, start 0 along "
                                         "rows of 7 pixels"):
        ops.pool_fwd(x, "max", 3, 2, outputs=5)
    with pytest.raises(ValueError, match="pool_fwd: .* start -3 along rows"):
        ops.pool_fwd(x, "avg", 3, 2, start=-3)
    with pytest.raises(TypeError, match="pool_fwd: x must be float32"):
        ops.pool_fwd(convnet.zeros((2, 7, 7, 3), np.int32, device=device), "max", 3, 2)
    with pytest.raises(ValueError, match="pool_fwd: x must have 4 dimensions"):
        ops.pool_fwd(convnet.zeros((2, 7, 7), device=device), "max", 3, 2)
    y = ops.pool_fwd(x, "max", 3, 2)
    with pytest.raises(ValueError, match=r"pool_bwd: dx has shape \(2, 7, 7, 2\), expected "
                                         r"\(2, 7, 7, 3\)"):
        ops.pool_bwd(y, x, y, "max", 3, 2, out=convnet.zeros((2, 7, 7, 2), device=device))
    with pytest.raises(ValueError, match=r"pool_bwd: y has shape \(2, 7, 7, 3\), expected"):
        ops.pool_bwd(y, x, x, "max", 3, 2)
    with pytest.raises(ValueError, match="pool_bwd: max pooling needs y"):
        ops.pool_bwd(y, x, None, "max", 3, 2)
    with pytest.raises(ValueError, match="pool_bwd: output dx overlaps input x"):
        ops.pool_bwd(y, x, y, "max", 3, 2, out=x)


def test_emulated_thread_orders_bit_identical(rng):
    """Race-free kernels give the same bits whichever order the emulated threads run in (norm
    kernels included: one place for the check)."""
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    x = rng.standard_normal((5, 7, 9, 3)).astype(np.float32)
    dy_norm = rng.standard_normal(x.shape).astype(np.float32)
    previous = emu.thread_order()
    results = {}
    try:
        for order in ("forward", "reverse"):
            emu.set_thread_order(order)
            tx = convnet.tensor(x, "emu:0")
            out = []
            for mode in ("max", "avg"):
                y = ops.pool_fwd(tx, mode, 3, 2)
                dy = convnet.tensor(np.ones(y.shape, np.float32), "emu:0")
                out += [y.numpy(), ops.pool_bwd(dy, tx, y, mode, 3, 2).numpy()]
            for fwd, bwd in ((ops.lrn_fwd, ops.lrn_bwd), (ops.rnorm_fwd, ops.rnorm_bwd)):
                y, d = fwd(tx, 4, 0.5, 0.75, 2.0)
                out += [y.numpy(), bwd(convnet.tensor(dy_norm, "emu:0"), tx, y, d, 4, 0.5,
                                       0.75).numpy()]
            results[order] = out
    finally:
        emu.set_thread_order(previous)
    for a, b in zip(results["forward"], results["reverse"]):
        np.testing.assert_array_equal(a, b)


# -- Winners: the max forward records each window's winner, the backward routes from it --------

def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def _tied(rng, shape):
    """Values with ties in most windows, exact +0 and -0, and negatives: a ReLU output's zeros,
    and whole windows whose max is -0 or negative (routed by the plain backward, masked by the
    ReLU's)."""
    x = rng.integers(-2, 3, shape).astype(np.float32)
    x[rng.random(shape) < 0.2] = -0.0
    return x


def _ref_winners(x, size, stride, start, outputs):
    """The byte pool_fwd records (csrc/common/pool.h): the first max's offset in its clipped
    window (numpy's argmax takes the first), 0x80 when the max is not > 0 by its bits."""
    C, H, W, N = x.shape
    y = ref.pool_fwd(x, "max", size, stride, start, outputs)
    out = np.empty(y.shape, np.uint8)
    for oy in range(y.shape[1]):
        ylo, yhi = ref.pool_window(oy, size, stride, start, H)
        for ox in range(y.shape[2]):
            xlo, xhi = ref.pool_window(ox, size, stride, start, W)
            win = x[:, ylo:yhi, xlo:xhi].reshape(C, -1, N)
            m = y[:, oy, ox].astype(np.float32)
            sign = np.where(m.view(np.int32) > 0, 0, 0x80)
            out[:, oy, ox] = np.argmax(win, axis=1) | sign
    return out


def _winner_runs(device, x, dy, acc, size, stride, start, outs):
    """(y, dx, dx accumulated, fused dx, fused db) by the (x, y) backward and from winners."""
    tx, tdy = convnet.tensor(x, device), convnet.tensor(dy, device)
    runs = []
    for recorded in (False, True):
        y = ops.pool_fwd(tx, "max", size, stride, start, outputs=outs)
        winners = ops.pool_winners(y) if recorded else None
        if recorded:
            ops.pool_fwd(tx, "max", size, stride, start, outputs=outs, out=y, winners=winners)
        # With winners the backward gets neither x nor y: it cannot read them.
        xs, ys = (None, None) if recorded else (tx, y)
        dx = ops.pool_bwd(tdy, xs, ys, "max", size, stride, start, winners=winners,
                          out=convnet.empty(x.shape, device=device))
        out = convnet.tensor(acc, device)
        ops.pool_bwd(tdy, xs, ys, "max", size, stride, start, out=out, accumulate=True,
                     winners=winners)
        db = convnet.tensor(np.full(x.shape[0], np.nan, np.float32), device)
        fused = ops.pool_bwd(tdy, xs, ys, "max", size, stride, start, relu_bias=db,
                             winners=winners, out=convnet.empty(x.shape, device=device))
        runs.append([y.numpy(), dx.numpy(), out.numpy(), fused.numpy(), db.numpy()])
        if recorded:
            runs.append(winners.numpy())
    return runs


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_winners_backward_bit_identical(device, rng, case):
    """Every geometry of CASES, with ties, signed zeros and non-positive windows: the forward
    with winners gives the same y bits, the winners are the reference's, and the backward from
    them the (x, y) backward's bits: written, accumulated, and fused with the ReLU + bias
    gradient."""
    c, h, w, n, size, stride, start, outs = case
    x = _tied(rng, (c, h, w, n))
    dy = rng.standard_normal(ops.pool_output_shape(x.shape, size, stride, start, outs))
    dy = dy.astype(np.float32)
    acc = rng.standard_normal(x.shape).astype(np.float32)
    old, new, winners = _winner_runs(device, x, dy, acc, size, stride, start, outs)
    np.testing.assert_array_equal(winners, _ref_winners(x, size, stride, start, outs))
    for what, a, b in zip(("y", "dx", "dx accumulated", "fused dx", "fused db"), old, new):
        assert np.array_equal(_bits(a), _bits(b)), what
    assert_close(new[1], ref.pool_bwd(dy, x, "max", size, stride, start), rtol=1e-6, what="dx")


def test_winners_special_values(device, rng):
    """NaN first in a window (y is NaN: no pixel equals it, nothing routed), NaN later (never
    the max), infinities, and -0 against +0 in either order: the (x, y) backward's bits."""
    x = rng.standard_normal((2, 7, 9, 8)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 2, 3, 1] = -np.nan
    x[0, 4, 4, 2] = np.inf
    x[1, :3, :3, 3] = -np.inf
    x[1, :3, :3, 4] = [[-0.0, 0.0, -0.0], [0.0, -1.0, 0.0], [-0.0, -0.0, -0.0]]
    x[1, :3, :3, 5] = [[0.0, -0.0, 0.0], [-0.0, -1.0, 0.0], [-3.0, -0.0, -0.0]]
    dy = rng.standard_normal(ops.pool_output_shape(x.shape, 3, 2)).astype(np.float32)
    dy[1, 0, 0, 6] = np.inf
    acc = rng.standard_normal(x.shape).astype(np.float32)
    old, new, winners = _winner_runs(device, x, dy, acc, 3, 2, 0, None)
    assert winners[0, 0, 0, 0] == 0x7f  # a positive NaN: no winner, and not masked
    # -0 then +0 and +0 then -0: the first pixel wins, masked by a ReLU either way.
    assert winners[1, 0, 0, 4] == 0x80 and winners[1, 0, 0, 5] == 0x80
    for what, a, b in zip(("y", "dx", "dx accumulated", "fused dx", "fused db"), old, new):
        assert np.array_equal(_bits(a), _bits(b)), what


@pytest.mark.parametrize("images", [1, 16, 37, 85])
def test_cpu_winners_every_path(isa, rng, images):
    """The CPU forward records blocks of four registers of images (4, 8 or 16 lanes by the SIMD
    path), then of one, then the rest; the backward one register at a time, then the rest (85 =
    64 + 16 + 5 takes every kind at AVX-512): each path gives the (x, y) backward's bits, also
    fused with the ReLU + bias gradient."""
    x = _tied(rng, (3, 9, 8, images))
    dy = rng.standard_normal(ops.pool_output_shape(x.shape, 3, 2)).astype(np.float32)
    acc = rng.standard_normal(x.shape).astype(np.float32)
    old, new, winners = _winner_runs("cpu", x, dy, acc, 3, 2, 0, None)
    np.testing.assert_array_equal(winners, _ref_winners(x, 3, 2, 0, None))
    for what, a, b in zip(("y", "dx", "dx accumulated", "fused dx", "fused db"), old, new):
        assert np.array_equal(_bits(a), _bits(b)), f"{isa} {what}"


def test_winners_bad_arguments(device):
    x = convnet.zeros((2, 7, 7, 3), device=device)
    y = ops.pool_fwd(x, "max", 3, 2)
    w = ops.pool_winners(y)
    with pytest.raises(ValueError, match="pool_fwd: winners are for max pooling only"):
        ops.pool_fwd(x, "avg", 3, 2, winners=w)
    with pytest.raises(ValueError, match="pool_bwd: winners are for max pooling only"):
        ops.pool_bwd(y, x, None, "avg", 3, 2, winners=w)
    with pytest.raises(ValueError, match=r"pool_fwd: winners has shape \(2, 2, 2, 3\)"):
        ops.pool_fwd(x, "max", 3, 2, winners=convnet.zeros((2, 2, 2, 3), np.uint8, device))
    with pytest.raises(TypeError, match="pool_fwd: winners must be uint8"):
        ops.pool_fwd(x, "max", 3, 2, winners=convnet.zeros(y.shape, device=device))
    big = convnet.zeros((1, 12, 12, 1), device=device)
    yb = ops.pool_fwd(big, "max", 12, 1)
    with pytest.raises(ValueError, match="pool_fwd: winners need windows of at most 11x11"):
        ops.pool_fwd(big, "max", 12, 1, winners=ops.pool_winners(yb))
    with pytest.raises(ValueError, match="pool_bwd_winners: winners has shape"):
        ops.pool_bwd(y, x, None, "max", 3, 2, winners=convnet.zeros((2, 3, 3, 2), np.uint8,
                                                                    device))
    with pytest.raises(ValueError, match="pool_bwd: give x or out"):
        ops.pool_bwd(y, None, None, "max", 3, 2, winners=w)
    with pytest.raises(ValueError, match="pool_bwd_winners_relu_bias: .*db"):
        ops.pool_bwd(y, x, None, "max", 3, 2, winners=w,
                     relu_bias=convnet.zeros((3,), device=device))


# data -> pool0 (max, on the images: no backward) -> conv1 (ReLU) -> pool1 (max, fused with
# conv1's ReLU + bias gradient) -> conv2 (ReLU) -> pool2 (max, beside an fc: not fused) -> fc3.
WINNER_NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[pool0]
type=pool
pool=max
inputs=data
sizeX=2
stride=1
[conv1]
type=conv
inputs=pool0
channels=3
filters=6
filterSize=3
padding=1
neuron=relu
{learn}
[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
[conv2]
type=conv
inputs=pool1
filters=5
filterSize=3
padding=1
neuron=relu
{learn}
[pool2]
type=pool
pool=max
inputs=conv2
sizeX=3
stride=2
start=-1
[fc3]
type=fc
inputs=pool2,conv2
outputs=10
{learn}
[probs]
type=softmax
inputs=fc3
[logprob]
type=cost.logreg
inputs=labels,probs
""".format(learn="initW=0.1\nepsW=0.01\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.0")


@pytest.mark.parametrize("device", ["cpu", "emu:0"])
def test_net_routes_from_winners(rng, tmp_path, device):
    """Pools whose backward runs keep winners, recorded by training forwards only; the gradients
    from them are the bits of the (x, y) backward (run after a test-time forward)."""
    if device == "emu:0" and "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    from convnet.config import load_config
    from convnet.net import Net
    cfg = tmp_path / "winners.cfg"
    cfg.write_text(WINNER_NET)
    images = rng.integers(-2, 3, (3, 11, 13, 4)).astype(np.float32)
    labels = np.arange(4, dtype=np.int32) % 10
    net = Net(load_config(str(cfg)), image_shape=(3, 11, 13), device=device, batch_size=5, seed=5)
    layers = {L.name: L for L in net.layers}
    assert layers["pool0"].winners is None
    assert layers["pool1"].winners is not None and layers["pool2"].winners is not None
    assert layers["pool1"].relu_bias_of is layers["conv1"]
    grads = {}
    for train in (True, False):
        net.forward(images, labels, train=train)
        assert (layers["pool1"]._winners_of == 4) == train
        net.backward()
        grads[train] = {(L.name, p.name): p.grad.numpy().copy()
                        for L in net.layers for p in getattr(L, "params", [])}
    for key, g in grads[True].items():
        assert np.array_equal(_bits(g), _bits(grads[False][key])), key
