"""Convolution, bias and fully-connected ops on every backend against tests/ref_conv.py."""
import numpy as np
import pytest

import convnet
from convnet import ops

import ref_conv as ref
from isa_paths import cpu_threads, isa  # noqa: F401  (isa: fixture)
from gradcheck import assert_close, assert_grad

# (C, H, W, N, F, fs, padding, stride, groups): odd sizes, batch 1 and 3, non-square images,
# stride 3 with padding, groups 2 and 3, windows hanging over the far edge (round-up rule),
# padding >= filter size, a filter as large as the padded image, 1x1 filters and images, batches
# of 32 and 64, a stride larger than the filter.
SHAPES = [
    (5, 7, 9, 1, 3, 3, 0, 1, 1),
    (5, 7, 9, 3, 3, 3, 1, 1, 1),
    (4, 7, 9, 3, 6, 3, 1, 3, 2),
    (6, 9, 7, 2, 9, 5, 2, 2, 3),
    (3, 11, 10, 2, 4, 4, 0, 3, 1),
    (2, 4, 5, 3, 3, 2, 2, 1, 1),
    (2, 5, 5, 1, 2, 7, 1, 1, 1),
    (3, 1, 1, 3, 5, 1, 0, 1, 1),
    (4, 6, 6, 17, 4, 3, 1, 1, 2),
    (4, 6, 6, 32, 4, 3, 1, 1, 2),   # whole 32-image panels (14x32 tile): gathered by row copies
    (3, 7, 9, 64, 5, 3, 1, 2, 1),   # whole 64-image panels (6x64 tile)
    (5, 6, 5, 128, 7, 3, 1, 1, 1),  # a training batch, stride 1: both tiles gather every panel
    (13, 6, 5, 64, 14, 5, 2, 1, 1),  # full 6-row tiles packing the panels they read, 3 k blocks
    (3, 8, 7, 2, 4, 2, 1, 3, 1),    # stride 3 > filter 2: pixels no window reaches
]
IDS = ["x".join(map(str, s)) for s in SHAPES]


def _on(device, a):
    return convnet.tensor(np.asarray(a, np.float32), device)


def _problem(rng, shape):
    c, h, w, n, f, fs, pad, stride, groups = shape
    x = rng.standard_normal((c, h, w, n))
    wt = rng.standard_normal((c // groups, fs, fs, f))
    ho, wo = ref.out_size(h, fs, pad, stride), ref.out_size(w, fs, pad, stride)
    dy = rng.standard_normal((f, ho, wo, n))
    return x, wt, dy, dict(padding=pad, stride=stride, groups=groups)


# The CPU's Winograd F(2x2,3x3) and F(2x2,5x5) variants (csrc/cpu/winograd.h): 5 of conv_fwd and
# conv_bwd_data, 6 of conv_bwd_weights (whose variant 5 is its direct kernel). Variant 6 of
# conv_fwd and conv_bwd_data is the direct kernel of csrc/cpu/conv_fwd_direct_kernels.h (the data
# gradient at stride 1 only).
WINOGRAD, WINOGRAD_WGRAD, DIRECT = 5, 6, 6


def _winograd_variant(op):
    return WINOGRAD_WGRAD if op == "conv_bwd_weights" else WINOGRAD


def _variants(op, device, shape=None):
    """The variants of `op` on `device`'s backend that take `shape` (C, H, W, N, F, fs, padding,
    stride, groups): the CPU's Winograd variants only 3x3 and 5x5 filters with stride 1, its
    direct data gradient only stride 1."""
    vs = list(range(ops.conv_variant_count(op, device=device.split("/")[0])))
    if device == "cpu" and op.startswith("conv") and shape is not None:
        if (shape[5], shape[7]) not in ((3, 1), (5, 1)):
            vs = [v for v in vs if v != _winograd_variant(op)]
        if op == "conv_bwd_data" and shape[7] != 1:
            vs = [v for v in vs if v != DIRECT]
    return vs


def _run_variant(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ValueError as e:
        if "not supported by this CPU" in str(e):
            pytest.skip(str(e))
        raise


# ---- the references, checked by finite differences ------------------------------------------

@pytest.mark.parametrize("shape", [(4, 5, 7, 1, 4, 3, 1, 3, 2), (3, 5, 4, 1, 3, 3, 1, 2, 3),
                                   SHAPES[4], SHAPES[5]])
def test_reference_gradients(rng, shape):
    x, w, dy, kw = _problem(rng, (shape[0], shape[1], shape[2], 1) + shape[4:])
    fs = w.shape[1]
    assert_grad(lambda x_: ref.conv_fwd(x_, w, **kw), x, dy,
                ref.conv_bwd_data(dy, w, x.shape, **kw))
    assert_grad(lambda w_: ref.conv_fwd(x, w_, **kw), w, dy,
                ref.conv_bwd_weights(x, dy, fs, **kw))


def test_reference_round_up():
    # 224 with 11x11 stride 4: 55 outputs, the last window reads 3 columns past the edge.
    assert ref.out_size(224, 11, 0, 4) == 55 == ops.conv_out_size(224, 11, 0, 4)
    x = np.ones((1, 6, 6, 1))
    y = ref.conv_fwd(x, np.ones((1, 3, 3, 1)), stride=2)  # windows at 0, 2, 4: the last hangs over
    assert y.shape == (1, 3, 3, 1)
    assert y[0, 0, 0, 0] == 9 and y[0, 0, 2, 0] == 6 and y[0, 2, 2, 0] == 4


def test_reference_fc_and_bias_gradients(rng):
    x, w, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    dy = rng.standard_normal((4, 3))
    assert_grad(lambda x_: ref.fc_fwd(x_, w, b), x, dy, ref.fc_bwd_data(dy, w))
    assert_grad(lambda w_: ref.fc_fwd(x, w_, b), w, dy, ref.fc_bwd_weights(x, dy))
    assert_grad(lambda b_: ref.fc_fwd(x, w, b_), b, dy, ref.bias_bwd(dy))


# ---- every backend against the references ----------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_fwd(device, rng, shape):
    x, w, dy, kw = _problem(rng, shape)
    want = ref.conv_fwd(x, w, **kw)
    for v in _variants("conv_fwd", device, shape):
        y = _run_variant(ops.conv_fwd, _on(device, x), _on(device, w), variant=v, **kw)
        assert_close(y.numpy(), want, what=f"conv_fwd variant {v}")


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_bwd_data(device, rng, shape):
    x, w, dy, kw = _problem(rng, shape)
    want = ref.conv_bwd_data(dy, w, x.shape, **kw)
    for v in _variants("conv_bwd_data", device, shape):
        dx = _run_variant(ops.conv_bwd_data, _on(device, dy), _on(device, w), x.shape, variant=v,
                          **kw)
        assert_close(dx.numpy(), want, what=f"conv_bwd_data variant {v}")


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_bwd_weights(device, rng, shape):
    x, w, dy, kw = _problem(rng, shape)
    want = ref.conv_bwd_weights(x, dy, w.shape[1], **kw)
    for v in _variants("conv_bwd_weights", device, shape):
        dw = _run_variant(ops.conv_bwd_weights, _on(device, x), _on(device, dy), w.shape[1],
                          variant=v, **kw)
        assert_close(dw.numpy(), want, what=f"conv_bwd_weights variant {v}")


def test_weight_gradient_bits_do_not_depend_on_timing(rng):
    # k (positions x images) dwarfs the (taps, filters) output: the threads split the reduction.
    x, wt, dy, kw = _problem(rng, (4, 16, 16, 32, 8, 3, 1, 1, 1))
    x, dy = _on("cpu", x), _on("cpu", dy)
    runs = [ops.conv_bwd_weights(x, dy, 3, **kw).numpy() for _ in range(6)]
    assert all(np.array_equal(r.view(np.uint32), runs[0].view(np.uint32)) for r in runs[1:])


# The direct weight gradient (CPU variant 5, csrc/cpu/conv_wgrad_kernels.h): its register tiles
# are 12x16, 8x32, 8x48 and 6x64 on AVX-512, 8x8 and 6x16 on AVX2, 8x4 and 6x8 on the baseline
# path, picked by the filters per group (here 32, 35, 120, 20, 7, 40: every tile, partial last
# tap tiles and filter chunks, several chunks), with a batch larger than a column block (300
# images: one position per block), padding wider than the window reaches, and a split between
# threads.
DIRECT_WGRAD_SHAPES = [
    (3, 9, 8, 5, 32, 5, 2, 1, 1),
    (2, 6, 7, 3, 70, 3, 1, 2, 2),
    (3, 5, 6, 2, 120, 3, 1, 1, 1),
    (2, 4, 5, 300, 20, 3, 1, 1, 1),
    (1, 3, 3, 1, 7, 3, 2, 1, 1),
    (8, 12, 11, 64, 40, 5, 2, 1, 1),
]


@pytest.mark.parametrize("shape", DIRECT_WGRAD_SHAPES,
                         ids=["x".join(map(str, s)) for s in DIRECT_WGRAD_SHAPES])
def test_direct_weight_gradient_every_cpu_path(rng, shape):
    cpu = convnet.device.module_for("cpu")
    order = ["portable", "avx2", "avx512"]
    previous = cpu.isa()
    x, w, dy, kw = _problem(rng, shape)
    want = ref.conv_bwd_weights(x, dy, w.shape[1], **kw)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    prev = rng.standard_normal(w.shape).astype(np.float32)
    try:
        for isa in order[:order.index(cpu.isa_supported()) + 1]:
            cpu.set_isa(isa)
            runs = [ops.conv_bwd_weights(x32, dy32, w.shape[1], variant=5, **kw).numpy()
                    for _ in range(2)]
            assert_close(runs[0], want, what=isa)
            assert np.array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32)), isa
            dw = prev.copy()
            ops.conv_bwd_weights(x32, dy32, w.shape[1], variant=5, out=dw, accumulate=True, **kw)
            assert_close(dw, prev + want, what=f"{isa} accumulate")
    finally:
        cpu.set_isa(previous)


# The direct kernel (CPU conv_fwd and conv_bwd_data variant 6, csrc/cpu/conv_fwd_direct_kernels.h):
# tiles of 6 filters (or channels) x 64 images (AVX-512), 16 (AVX2) or 8 (baseline); here 40
# filters (six full blocks and one of 4 rows), 1 and 7, 8 and 13 channels, batches of whole tiles
# and not (130: two images past them; 3: none in a tile), stride 2 (forward only), two groups,
# padding wider than the filter (the data gradient's own padding negative), and positions whose
# windows hang over every border.
DIRECT_FWD_SHAPES = [
    (8, 12, 11, 64, 40, 5, 2, 1, 1),
    (3, 9, 8, 130, 7, 5, 2, 2, 1),
    (4, 6, 7, 3, 6, 3, 1, 1, 2),
    (2, 5, 5, 16, 1, 3, 2, 1, 1),
    (13, 5, 6, 16, 3, 2, 2, 1, 1),
]


def _direct_problem(rng, shape):
    """_problem plus a bias, the float32 operands and the float64 convolution (no bias)."""
    x, w, dy, kw = _problem(rng, shape)
    b = rng.standard_normal(w.shape[3])
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    return x, w, b, dy, kw, (x32, w32, b32), ref.conv_fwd(x, w, **kw)


@pytest.mark.parametrize("shape", DIRECT_FWD_SHAPES,
                         ids=["x".join(map(str, s)) for s in DIRECT_FWD_SHAPES])
def test_direct_kernel_every_cpu_path(isa, rng, shape):
    x, w, b, dy, kw, (x32, w32, b32), conv = _direct_problem(rng, shape)
    prev = rng.standard_normal(dy.shape)
    prev32 = prev.astype(np.float32)
    assert_close(np.asarray(ops.conv_fwd(x32, w32, variant=6, **kw)), conv, what=isa)
    y = np.asarray(ops.conv_fwd(x32, w32, b32, relu=True, out=prev32.copy(), accumulate=True,
                                variant=6, **kw))
    assert_close(y, np.maximum(prev + conv + b[:, None, None, None], 0),
                 what=f"{isa} bias+relu accumulate")
    # Each output is one tile's sum: the same bits with any number of threads.
    runs = []
    for t in (1, 2, 3):
        with cpu_threads(t):
            runs.append(np.asarray(ops.conv_fwd(x32, w32, b32, relu=True, variant=6, **kw)))
    assert all(np.array_equal(r.view(np.uint32), runs[0].view(np.uint32)) for r in runs[1:])
    if kw["stride"] != 1:
        return
    dx = np.asarray(ops.conv_bwd_data(dy.astype(np.float32), w32, x.shape, variant=6, **kw))
    assert_close(dx, ref.conv_bwd_data(dy, w, x.shape, **kw), what=f"{isa} data gradient")
    dx = np.asarray(ops.conv_bwd_data(dy.astype(np.float32), w32, x.shape, out=x32.copy(),
                                      accumulate=True, variant=6, **kw))
    assert_close(dx, x + ref.conv_bwd_data(dy, w, x.shape, **kw),
                 what=f"{isa} data gradient accumulate")


def test_direct_forward_selection(isa, rng):
    """Variant 0 runs the forward on the direct kernel (variant 6) with a batch of whole 64-image
    tiles and at most 64 filters per group, or, with at most 3 channels per group (an RGB input
    layer, AlexNet's conv1), up to 192 filters; otherwise on the GEMM, here over taps = 576 or 675
    (two k blocks or more on every kernel, so its sums round differently)."""
    for shape, direct in [((3, 19, 17, 64, 96, 11, 0, 4, 1), True),
                          ((6, 12, 12, 64, 192, 5, 2, 1, 2), True),
                          ((3, 20, 20, 64, 200, 15, 0, 4, 1), False),
                          ((4, 14, 14, 64, 72, 12, 1, 2, 1), False),
                          ((3, 19, 17, 37, 96, 11, 0, 4, 1), False)]:
        x, w, _, kw = _problem(rng, shape)
        x32, w32 = x.astype(np.float32), w.astype(np.float32)
        auto = ops.conv_fwd(x32, w32, **kw).numpy()
        assert_close(auto, ref.conv_fwd(x, w, **kw), what=f"{isa} {shape}")
        same = np.array_equal(auto.view(np.uint32),
                              ops.conv_fwd(x32, w32, variant=6, **kw).numpy().view(np.uint32))
        if direct:
            assert same, (isa, shape)
        elif shape[3] % 64 == 0:
            assert not same, (isa, shape)


# The strided data gradient's col2im (a GEMM into columns, then each column added to the pixel
# its tap reads): the threads split dx's rows, each adding its taps in one thread's order, so any
# thread count gives the same bits; odd sizes, padding at every border, two groups (the first two
# large enough for the threads to split the rows), one image.
@pytest.mark.parametrize("shape", [(3, 35, 29, 16, 8, 11, 2, 4, 1), (6, 17, 19, 16, 4, 3, 1, 2, 2),
                                   (2, 9, 7, 1, 3, 3, 2, 2, 1)])
def test_strided_data_gradient_bits_across_threads(isa, rng, shape):
    c, h, wd, n, f, fs, pad, stride, groups = shape
    kw = dict(padding=pad, stride=stride, groups=groups)
    w = rng.standard_normal((c // groups, fs, fs, f))
    dy = rng.standard_normal((f, ops.conv_out_size(h, fs, pad, stride),
                              ops.conv_out_size(wd, fs, pad, stride), n))
    prev = rng.standard_normal((c, h, wd, n))
    w32, dy32 = w.astype(np.float32), dy.astype(np.float32)
    runs = []
    for t in (1, 2, 3):
        with cpu_threads(t):
            runs.append(np.asarray(ops.conv_bwd_data(dy32, w32, (c, h, wd, n), **kw)))
            acc = np.asarray(ops.conv_bwd_data(dy32, w32, (c, h, wd, n), accumulate=True,
                                               out=prev.astype(np.float32), **kw))
    want = ref.conv_bwd_data(dy, w, (c, h, wd, n), **kw)
    assert_close(runs[0], want, what=f"{isa} strided data gradient")
    assert_close(acc, prev + want, what=f"{isa} strided data gradient accumulate")
    assert all(np.array_equal(r.view(np.uint32), runs[0].view(np.uint32)) for r in runs[1:])


# Where a position adds several columns (stride > 1) and the image rows one output row reads
# outgrow L2 (here 5.9 MB: 8 channels x 9 rows of 160 x 128 floats), the direct forward prefetches
# the columns the next position adds and the direct weight gradient the next tap tile's rows
# (conv_window_prefetch.h, conv_wgrad_kernels.h): the same sums, with windows clipped by the
# padding at every border (the prefetched runs clipped with them), 10 filters (a partial block).
PREFETCHED_SHAPE = (8, 15, 160, 128, 10, 9, 2, 3, 1)


def test_direct_kernels_prefetching_the_image(isa, rng):
    x, w, b, dy, kw, (x32, w32, b32), conv = _direct_problem(rng, PREFETCHED_SHAPE)
    want = np.maximum(conv + b[:, None, None, None], 0)
    runs = []
    for t in (1, 2, 3):
        with cpu_threads(t):
            runs.append(np.asarray(ops.conv_fwd(x32, w32, b32, relu=True, variant=6, **kw)))
    assert_close(runs[0], want, what=f"{isa} forward")
    assert all(np.array_equal(r.view(np.uint32), runs[0].view(np.uint32)) for r in runs[1:])
    dy32 = dy.astype(np.float32)
    dws = [ops.conv_bwd_weights(x32, dy32, w.shape[1], variant=5, **kw).numpy() for _ in range(2)]
    assert_close(dws[0], ref.conv_bwd_weights(x, dy, w.shape[1], **kw), what=f"{isa} wgrad")
    assert np.array_equal(dws[0].view(np.uint32), dws[1].view(np.uint32)), isa


# Outputs larger than L2 (here 3.3 and 4 MB) are streamed to memory when the output array is
# aligned to the SIMD vector (convnet's host tensors are 64-byte aligned): the same bits as plain
# stores into an array 4 bytes off alignment, at every thread count; 80 images leave 16 past the
# AVX-512 tiles (plain stores beside the streamed ones).
DIRECT_STREAMED_SHAPES = [
    (3, 16, 16, 256, 16, 5, 2, 1, 1),
    (3, 16, 16, 80, 40, 5, 2, 1, 1),
]


@pytest.mark.parametrize("shape", DIRECT_STREAMED_SHAPES,
                         ids=["x".join(map(str, s)) for s in DIRECT_STREAMED_SHAPES])
def test_direct_kernel_streamed_output(isa, rng, shape):
    _, _, b, _, kw, (x32, w32, b32), conv = _direct_problem(rng, shape)
    want = np.maximum(conv + b[:, None, None, None], 0)
    size = want.size
    raw = np.empty(size + 32, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    aligned = raw[start:start + size].reshape(want.shape)
    assert aligned.ctypes.data % 64 == 0
    off = np.empty(size + 1, np.float32)[1:].reshape(want.shape)
    assert off.ctypes.data % 64 != 0
    for t in (1, 2, 3):
        for y in (aligned, off):
            y.fill(np.nan)
            with cpu_threads(t):
                ops.conv_fwd(x32, w32, b32, relu=True, out=y, variant=6, **kw)
        assert_close(aligned, want, what=f"{isa} streamed, {t} threads")
        assert np.array_equal(aligned.view(np.uint32), off.view(np.uint32))


def test_direct_data_gradient_needs_stride_1():
    with pytest.raises(ValueError, match=r"conv_bwd_data: variant 6 \(direct\) needs stride 1, "
                                         r"got stride 2"):
        ops.conv_bwd_data(np.zeros((4, 4, 4, 2), np.float32), np.zeros((4, 3, 3, 4), np.float32),
                          (4, 9, 9, 2), stride=2, variant=DIRECT)


def test_conv_accumulate(device, rng):
    x, w, dy, kw = _problem(rng, SHAPES[2])
    prev_y, prev_dx, prev_dw = (rng.standard_normal(a.shape) for a in (dy, x, w))
    y = ops.conv_fwd(_on(device, x), _on(device, w), out=_on(device, prev_y), accumulate=True,
                     **kw)
    assert_close(y.numpy(), prev_y + ref.conv_fwd(x, w, **kw), what="conv_fwd accumulate")
    dx = ops.conv_bwd_data(_on(device, dy), _on(device, w), x.shape, out=_on(device, prev_dx),
                           accumulate=True, **kw)
    assert_close(dx.numpy(), prev_dx + ref.conv_bwd_data(dy, w, x.shape, **kw),
                 what="conv_bwd_data accumulate")
    dw = ops.conv_bwd_weights(_on(device, x), _on(device, dy), w.shape[1],
                              out=_on(device, prev_dw), accumulate=True, **kw)
    assert_close(dw.numpy(), prev_dw + ref.conv_bwd_weights(x, dy, w.shape[1], **kw),
                 what="conv_bwd_weights accumulate")


def test_conv_ignores_garbage_in_outputs(device, rng):
    # Without accumulate the outputs are written, never read (emulated memory starts as NaN).
    x, w, dy, kw = _problem(rng, SHAPES[3])
    y = convnet.full(dy.shape, np.nan, device=device)
    dx = convnet.full(x.shape, np.nan, device=device)
    dw = convnet.full(w.shape, np.nan, device=device)
    ops.conv_fwd(_on(device, x), _on(device, w), out=y, **kw)
    ops.conv_bwd_data(_on(device, dy), _on(device, w), x.shape, out=dx, **kw)
    ops.conv_bwd_weights(_on(device, x), _on(device, dy), w.shape[1], out=dw, **kw)
    assert_close(y.numpy(), ref.conv_fwd(x, w, **kw))
    assert_close(dx.numpy(), ref.conv_bwd_data(dy, w, x.shape, **kw))
    assert_close(dw.numpy(), ref.conv_bwd_weights(x, dy, w.shape[1], **kw))


@pytest.mark.parametrize("shape", [(5, 7, 9, 3), (3, 1), (4, 1, 1, 2)])
def test_bias(device, rng, shape):
    y, b = rng.standard_normal(shape), rng.standard_normal(shape[0])
    ty = _on(device, y)
    ops.bias_fwd(ty, _on(device, b))
    assert_close(ty.numpy(), ref.bias_fwd(y, b), what="bias_fwd")
    assert_close(ops.bias_bwd(_on(device, y)).numpy(), ref.bias_bwd(y), what="bias_bwd")
    prev = rng.standard_normal(shape[0])
    db = ops.bias_bwd(_on(device, y), out=_on(device, prev), accumulate=True)
    assert_close(db.numpy(), prev + ref.bias_bwd(y), what="bias_bwd accumulate")


@pytest.mark.parametrize("i,o,n", [(1, 1, 1), (5, 3, 1), (7, 9, 3), (37, 20, 17)])
def test_fc(device, rng, i, o, n):
    x, w, b = rng.standard_normal((i, n)), rng.standard_normal((i, o)), rng.standard_normal(o)
    dy = rng.standard_normal((o, n))
    tx, tw, tb, tdy = (_on(device, a) for a in (x, w, b, dy))
    for v in _variants("fc_fwd", device):
        assert_close(_run_variant(ops.fc_fwd, tx, tw, tb, variant=v).numpy(), ref.fc_fwd(x, w, b),
                     what=f"fc_fwd variant {v}")
        assert_close(_run_variant(ops.fc_fwd, tx, tw, variant=v).numpy(), ref.fc_fwd(x, w),
                     what=f"fc_fwd no bias variant {v}")
    for v in _variants("fc_bwd_data", device):
        assert_close(_run_variant(ops.fc_bwd_data, tdy, tw, variant=v).numpy(),
                     ref.fc_bwd_data(dy, w), what=f"fc_bwd_data variant {v}")
    for v in _variants("fc_bwd_weights", device):
        assert_close(_run_variant(ops.fc_bwd_weights, tx, tdy, variant=v).numpy(),
                     ref.fc_bwd_weights(x, dy), what=f"fc_bwd_weights variant {v}")
    prev_y, prev_dx, prev_dw = (rng.standard_normal(s) for s in ((o, n), (i, n), (i, o)))
    y = ops.fc_fwd(tx, tw, tb, out=_on(device, prev_y), accumulate=True)
    assert_close(y.numpy(), prev_y + ref.fc_fwd(x, w, b), what="fc_fwd accumulate")
    dx = ops.fc_bwd_data(tdy, tw, out=_on(device, prev_dx), accumulate=True)
    assert_close(dx.numpy(), prev_dx + ref.fc_bwd_data(dy, w), what="fc_bwd_data accumulate")
    dw = ops.fc_bwd_weights(tx, tdy, out=_on(device, prev_dw), accumulate=True)
    assert_close(dw.numpy(), prev_dw + ref.fc_bwd_weights(x, dy), what="fc_bwd_weights accumulate")


FC_DOT = ops.conv_variant_count("fc_bwd_data", device="cpu") - 1  # the inner-product variant
# The most images for which variant 0 takes FC_DOT, per SIMD path (csrc/cpu/fc_dot.h).
FC_DOT_MAX_IMAGES = {"avx512": 8, "avx2": 256, "portable": 256}


@pytest.mark.parametrize("i,o", [(1, 1), (7, 19), (37, 1001), (130, 4100)])
@pytest.mark.parametrize("n", [1, 3, 37, 64, 65, 128, 256])
def test_fc_bwd_data_dot(isa, rng, i, o, n):
    """The inner-product data gradient (no pack of w): rows and outputs off the register tiles,
    o past a k block (4100 at 128 images), against float64, plain and accumulating; variant 0
    runs it (the same bits) up to the path's FC_DOT_MAX_IMAGES."""
    w = rng.standard_normal((i, o)).astype(np.float32)
    dy = rng.standard_normal((o, n)).astype(np.float32)
    expect = ref.fc_bwd_data(dy.astype(np.float64), w.astype(np.float64))
    dx = ops.fc_bwd_data(dy, w, variant=FC_DOT).numpy()
    assert_close(dx, expect, what=f"fc_bwd_data dot {isa}")
    prev = rng.standard_normal((i, n)).astype(np.float32)
    acc = ops.fc_bwd_data(dy, w, out=prev.copy(), accumulate=True, variant=FC_DOT)
    assert_close(acc, prev + expect, what=f"fc_bwd_data dot accumulate {isa}")
    if n <= FC_DOT_MAX_IMAGES[isa]:
        assert np.array_equal(ops.fc_bwd_data(dy, w).numpy(), dx), "variant 0 is not the dot path"


@pytest.mark.parametrize("i,o,n", [(203, 2100, 37), (131, 2100, 128)])
def test_fc_bwd_data_dot_bits_across_threads(isa, rng, i, o, n):
    """Threads take fixed shares of the rows and each dx element's sum keeps its order, so 1, 2
    and 3 threads give the same bits, plain and accumulating: whole register tiles (one
    transposing reduction each) and the edge tiles, o in k blocks with a partial last vector."""
    w = rng.standard_normal((i, o)).astype(np.float32)
    dy = rng.standard_normal((o, n)).astype(np.float32)
    prev = rng.standard_normal((i, n)).astype(np.float32)
    runs, accs = [], []
    for threads in (1, 2, 3):
        with cpu_threads(threads):
            runs.append(ops.fc_bwd_data(dy, w, variant=FC_DOT).numpy())
            accs.append(ops.fc_bwd_data(dy, w, out=prev.copy(), accumulate=True, variant=FC_DOT))
    expect = ref.fc_bwd_data(dy.astype(np.float64), w.astype(np.float64))
    assert_close(runs[0], expect, what=f"fc_bwd_data dot {isa}")
    assert_close(accs[0], prev + expect, what=f"fc_bwd_data dot accumulate {isa}")
    for r in (runs, accs):
        assert np.array_equal(r[0], r[1]) and np.array_equal(r[0], r[2]), \
            f"{isa}: bits depend on the thread count"


def test_fc_bwd_data_dot_whole_and_edge_tiles_agree(isa, rng):
    """A whole register tile reduces its accumulators together (tile_sums), an edge tile one at a
    time (vsum), both adding each one's lanes in the same order: dx rows and images that fall in
    whole tiles in one call and in edge tiles in a call with fewer rows or images keep their bits.
    o = 250 is one k block (a partial vector at every path) whatever the image count."""
    i, o, n = 25, 250, 41
    w = rng.standard_normal((i, o)).astype(np.float32)
    dy = rng.standard_normal((o, n)).astype(np.float32)
    dx = ops.fc_bwd_data(dy, w, variant=FC_DOT).numpy()
    assert_close(dx, ref.fc_bwd_data(dy.astype(np.float64), w.astype(np.float64)),
                 what=f"fc_bwd_data dot {isa}")
    for rows in range(1, i):
        part = ops.fc_bwd_data(dy, np.ascontiguousarray(w[:rows]), variant=FC_DOT).numpy()
        assert np.array_equal(part, dx[:rows]), f"{isa}: {rows} rows differ from the whole run"
    for images in range(1, n):
        part = ops.fc_bwd_data(np.ascontiguousarray(dy[:, :images]), w, variant=FC_DOT).numpy()
        assert np.array_equal(part, dx[:, :images]), f"{isa}: {images} images differ"


def test_fc_bwd_data_prefetched_blocks_keep_bits(isa, rng):
    """The SGEMM data gradient with few images (few B panels) and w larger than L2 packs w in
    smaller A blocks while prefetching the next block's rows (gemm_driver.h, rows_ahead): the same
    sums in the same order as with many images, where it does not, so the shared columns match bit
    for bit, and both match the float64 reference. m, k span several A and k blocks. Each SGEMM
    micro-kernel of the path is named, as variant 0 takes the inner products at 40 images. (The
    AVX-512 kernels read w in place instead, in k blocks sized from the images:
    test_fc_bwd_data_w_in_place.)"""
    if isa == "avx512":
        pytest.skip("the AVX-512 kernels read w in place (test_fc_bwd_data_w_in_place)")
    i, o, n, wide = 600, 1100, 40, 340
    w = rng.standard_normal((i, o)).astype(np.float32)
    dy_wide = rng.standard_normal((o, wide)).astype(np.float32)
    dy = np.ascontiguousarray(dy_wide[:, :n])
    for v in {"portable": (1,), "avx2": (2,)}[isa]:
        with cpu_threads(1):
            dx = ops.fc_bwd_data(dy, w, variant=v).numpy()
            dx_wide = ops.fc_bwd_data(dy_wide, w, variant=v).numpy()
        assert_close(dx, ref.fc_bwd_data(dy.astype(np.float64), w.astype(np.float64)),
                     what=f"fc_bwd_data {isa} variant {v}")
        assert np.array_equal(dx, dx_wide[:, :n]), \
            f"{isa} variant {v}: few-image columns differ from wide run"


def test_fc_bwd_data_w_in_place(isa, rng):
    """The data gradient with w's rows 16 KB apart (o = 4096, as fc6 / fc7) and 4000 bytes apart
    (o = 1000, fc8), from just past the inner products' image count to 128 images: on AVX-512 the
    SGEMM reads w in place (6x64 at 64 and 128 images, 14x32 where 64-wide panels would pad
    more). Against float64, plain and accumulating, the same bits on 1 and 2 threads."""
    for i, o in [(523, 4096), (131, 1000)]:  # i > o / 8: not split over o
        w = rng.standard_normal((i, o)).astype(np.float32)
        for n in (FC_DOT_MAX_IMAGES[isa] + 1, 64, 128):
            dy = rng.standard_normal((o, n)).astype(np.float32)
            prev = rng.standard_normal((i, n)).astype(np.float32)
            expect = ref.fc_bwd_data(dy.astype(np.float64), w.astype(np.float64))
            runs = []
            for threads in (1, 2):
                with cpu_threads(threads):
                    runs.append((ops.fc_bwd_data(dy, w).numpy(),
                                 ops.fc_bwd_data(dy, w, out=prev.copy(), accumulate=True)))
            assert_close(runs[0][0], expect, what=f"fc_bwd_data {isa} {i}x{o}, {n} images")
            assert_close(runs[0][1], prev + expect, what=f"accumulating {isa} {i}x{o}, {n}")
            for got, one in zip(runs[1], runs[0]):
                assert np.array_equal(got, one), f"{isa} {i}x{o}, {n}: bits depend on threads"

# ---- AlexNet's layers (paper shapes, small batch), CPU only ----------------------------------

# name: (C, H, W, F, fs, padding, stride, groups)
ALEXNET = {
    "conv1": (3, 224, 224, 96, 11, 0, 4, 1),
    "conv2": (96, 27, 27, 256, 5, 2, 1, 2),
    "conv3": (256, 13, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 13, 384, 3, 1, 1, 2),
    "conv5": (384, 13, 13, 256, 3, 1, 1, 2),
}


@pytest.mark.parametrize("layer", list(ALEXNET))
def test_alexnet_conv_layers_cpu(rng, layer):
    c, h, w, f, fs, pad, stride, groups = ALEXNET[layer]
    x, wt, dy, kw = _problem(rng, (c, h, w, 2, f, fs, pad, stride, groups))
    y = ops.conv_fwd(x.astype(np.float32), wt.astype(np.float32), **kw)
    assert_close(y.numpy(), ref.conv_fwd(x, wt, **kw), what=f"{layer} fwd")
    dx = ops.conv_bwd_data(dy.astype(np.float32), wt.astype(np.float32), x.shape, **kw)
    assert_close(dx.numpy(), ref.conv_bwd_data(dy, wt, x.shape, **kw), what=f"{layer} bwd_data")
    dw = ops.conv_bwd_weights(x.astype(np.float32), dy.astype(np.float32), fs, **kw)
    assert_close(dw.numpy(), ref.conv_bwd_weights(x, dy, fs, **kw), what=f"{layer} bwd_weights")


@pytest.mark.parametrize("i,o", [pytest.param(9216, 4096, marks=pytest.mark.slow),
                                 pytest.param(4096, 4096, marks=pytest.mark.slow), (4096, 1000)],
                         ids=["fc6", "fc7", "fc8"])
def test_alexnet_fc_layers_cpu(rng, i, o):
    n = 8
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((i, n), (i, o), (o,)))
    dy = rng.standard_normal((o, n)).astype(np.float32)
    assert_close(ops.fc_fwd(x, w, b).numpy(), ref.fc_fwd(x, w, b), what="fc_fwd")
    assert_close(ops.fc_bwd_data(dy, w).numpy(), ref.fc_bwd_data(dy, w), what="fc_bwd_data")
    assert_close(ops.fc_bwd_weights(x, dy).numpy(), ref.fc_bwd_weights(x, dy),
                 what="fc_bwd_weights")


# ---- bad input -------------------------------------------------------------------------------

def test_bad_arguments(device):
    x = convnet.zeros((6, 7, 9, 2), device=device)
    w = convnet.zeros((3, 3, 3, 4), device=device)
    with pytest.raises(ValueError, match=r"conv_fwd: groups=4 does not divide the 6 channels of "
                                         r"x \(6, 7, 9, 2\)"):
        ops.conv_fwd(x, convnet.zeros((1, 3, 3, 4), device=device), groups=4)
    with pytest.raises(ValueError, match=r"conv_fwd: groups=2 does not divide the 5 filters"):
        ops.conv_fwd(x, convnet.zeros((3, 3, 3, 5), device=device), groups=2)
    with pytest.raises(ValueError, match=r"conv_fwd: w \(3, 3, 3, 4\) expects 3 x 1 \(groups\) "
                                         r"channels but x \(6, 7, 9, 2\) has 6"):
        ops.conv_fwd(x, w)
    with pytest.raises(ValueError, match=r"conv_fwd: filter 11x11 does not fit the padded image "
                                         r"9x11 \(x \(6, 7, 9, 2\), padding 1\)"):
        ops.conv_fwd(x, convnet.zeros((6, 11, 11, 4), device=device), padding=1)
    with pytest.raises(ValueError, match=r"conv_fwd: filters must be square"):
        ops.conv_fwd(x, convnet.zeros((6, 3, 5, 4), device=device))
    with pytest.raises(ValueError, match=r"conv_fwd: y has shape \(4, 7, 9, 2\), expected "
                                         r"\(4, 5, 7, 2\)"):
        ops.conv_fwd(x, convnet.zeros((3, 3, 3, 4), device=device), groups=2,
                     out=convnet.zeros((4, 7, 9, 2), device=device))
    with pytest.raises(ValueError, match=r"conv_bwd_data: dy has shape \(4, 7, 9, 2\), expected "
                                         r"\(4, 5, 7, 2\)"):
        ops.conv_bwd_data(convnet.zeros((4, 7, 9, 2), device=device), w, (3, 7, 9, 2))
    with pytest.raises(ValueError, match=r"conv_bwd_weights: stride must be >= 1, got 0"):
        ops.conv_bwd_weights(x, convnet.zeros((4, 5, 7, 2), device=device), 3, stride=0,
                             groups=2)
    with pytest.raises(TypeError, match=r"conv_fwd: w must be float32, got int32"):
        ops.conv_fwd(x, convnet.zeros((6, 3, 3, 4), np.int32, device=device))
    with pytest.raises(ValueError, match=r"conv_fwd: x must be \(C, H, W, N\), got shape \(6, 7\)"):
        ops.conv_fwd(convnet.zeros((6, 7), device=device), w)
    with pytest.raises(ValueError, match=r"fc_fwd: w \(5, 3\) \(inputs, outputs\) does not match "
                                         r"x \(4, 2\) \(inputs, images\)"):
        ops.fc_fwd(convnet.zeros((4, 2), device=device), convnet.zeros((5, 3), device=device))
    with pytest.raises(ValueError, match=r"fc_fwd: b has shape \(4,\), expected \(3\)"):
        ops.fc_fwd(convnet.zeros((5, 2), device=device), convnet.zeros((5, 3), device=device),
                   convnet.zeros(4, device=device))
    with pytest.raises(ValueError, match=r"fc_bwd_weights: x \(5, 2\) \(inputs, images\) and dy "
                                         r"\(3, 4\) \(outputs, images\) differ in images"):
        ops.fc_bwd_weights(convnet.zeros((5, 2), device=device),
                           convnet.zeros((3, 4), device=device))
    with pytest.raises(ValueError, match=r"bias_fwd: b has shape \(3,\), expected \(6\)"):
        ops.bias_fwd(x, convnet.zeros(3, device=device))
    with pytest.raises(ValueError, match=r"conv_fwd: accumulate=True needs an existing `out`"):
        ops.conv_fwd(x, convnet.zeros((6, 3, 3, 4), device=device), accumulate=True)
    with pytest.raises(ValueError, match=r"conv_fwd: variant 99 does not exist"):
        ops.conv_fwd(x, convnet.zeros((6, 3, 3, 4), device=device), variant=99)


def test_bad_numpy_arguments_cpu():
    x = np.zeros((6, 7, 9, 2), np.float32)
    with pytest.raises(ValueError, match=r"conv_fwd: x: numpy array of shape \(6, 9, 9, 2\) is "
                                         r"not C-contiguous"):
        ops.conv_fwd(np.zeros((6, 9, 18, 2), np.float32)[:, :, ::2], np.zeros((6, 3, 3, 4),
                                                                               np.float32))
    with pytest.raises(TypeError, match=r"conv_fwd: w: numpy array has dtype float64"):
        ops.conv_fwd(x, np.zeros((6, 3, 3, 4)))
    with pytest.raises(ValueError, match=r"conv_fwd: output y is read-only"):
        y = np.zeros((4, 5, 7, 2), np.float32)
        y.flags.writeable = False
        ops.conv_fwd(x, np.zeros((6, 3, 3, 4), np.float32), out=y)
    if "emu" in convnet.backends():
        with pytest.raises(ValueError, match=r"conv_fwd: w is on emu:0 but this is the cpu"):
            ops.conv_fwd(x, convnet.zeros((6, 3, 3, 4), device="emu:0"))


def test_every_cpu_path(rng):
    # Variant 0 and the packing routines follow the process-wide SIMD path (set_isa /
    # CONVNET_CPU_ISA): run the three passes and the FC layer on every path this CPU has.
    cpu = convnet.device.module_for("cpu")
    order = ["portable", "avx2", "avx512"]
    previous = cpu.isa()
    x, w, dy, kw = _problem(rng, (6, 9, 7, 17, 9, 5, 2, 2, 3))
    fx, fw, fdy = (rng.standard_normal(s) for s in ((37, 17), (37, 20), (20, 17)))
    try:
        for isa in order[:order.index(cpu.isa_supported()) + 1]:
            cpu.set_isa(isa)
            f32 = lambda a: a.astype(np.float32)  # noqa: E731
            assert_close(ops.conv_fwd(f32(x), f32(w), **kw).numpy(), ref.conv_fwd(x, w, **kw),
                         what=isa)
            assert_close(ops.conv_bwd_data(f32(dy), f32(w), x.shape, **kw).numpy(),
                         ref.conv_bwd_data(dy, w, x.shape, **kw), what=isa)
            assert_close(ops.conv_bwd_weights(f32(x), f32(dy), w.shape[1], **kw).numpy(),
                         ref.conv_bwd_weights(x, dy, w.shape[1], **kw), what=isa)
            assert_close(ops.fc_bwd_data(f32(fdy), f32(fw)).numpy(), ref.fc_bwd_data(fdy, fw),
                         what=isa)
            assert_close(ops.fc_bwd_weights(f32(fx), f32(fdy)).numpy(),
                         ref.fc_bwd_weights(fx, fdy), what=isa)
    finally:
        cpu.set_isa(previous)


# ---- Winograd F(2x2,3x3) and F(2x2,5x5) on the CPU (csrc/cpu/winograd.h) --------------------

# (C, H, W, N, F, padding, groups): batch 1, odd batches, non-square images, odd output sizes
# (half tiles at the far edges), a 1x1 image, padding 0 to 3 (3: the data gradient crops), groups
# 2 and 3, channel and filter counts that are not multiples of a vector, 70 images (more than one
# 64-image run), and problems large enough for the threads to split the tiles.
WINOGRAD_SHAPES = [
    (5, 7, 9, 1, 3, 1, 1),
    (5, 8, 6, 3, 7, 0, 1),
    (4, 9, 11, 5, 6, 1, 2),
    (17, 6, 7, 2, 19, 2, 1),
    (3, 1, 1, 3, 5, 1, 1),
    (6, 5, 4, 2, 9, 3, 3),
    (16, 9, 9, 70, 18, 1, 2),
    (33, 13, 13, 32, 20, 1, 1),
    (24, 9, 9, 70, 27, 1, 3),  # the weight gradient's thread shares end inside a group
    # 9 tiles of 32 images: chunks of 8 tiles (256 columns) and a last one of 32 columns, whose
    # GEMMs take the 14x32 micro-kernel at AVX-512 where the full chunks' take 6x64: the filter
    # panels laid out for 6 rows are packed element by element for it.
    (8, 6, 6, 32, 10, 1, 1),
]
# The same for 5x5 filters: padding 0 to 2 and 5 (the data gradient crops: 4 - 5 < 0), a 1x1
# image (padding 2), images smaller than the filter, conv2's 48 channels per group.
WINOGRAD5_SHAPES = [
    (5, 7, 9, 1, 3, 2, 1),
    (5, 8, 6, 3, 7, 0, 1),
    (4, 9, 11, 5, 6, 1, 2),
    (17, 6, 7, 2, 19, 2, 1),
    (3, 1, 1, 3, 5, 2, 1),
    (6, 3, 4, 2, 9, 5, 3),
    (16, 9, 9, 70, 18, 2, 2),
    (96, 7, 7, 16, 20, 2, 2),
    (24, 9, 8, 70, 27, 1, 3),  # the weight gradient's thread shares end inside a group
    # The AVX-512 weight gradient's 4 x 4 dot-product tiles (csrc/cpu/winograd_dots.h): chunks
    # of 256 columns (whole vectors, the tiles' fast store) and a last one of 64; 19 channels and
    # 33 filters: edge tiles of 3 rows and of 1 filter.
    (19, 6, 6, 64, 33, 2, 1),
    (6, 5, 5, 3, 66, 2, 1),  # 66 filters: the AVX-512 weight gradient's GEMMs, not its dots
]
WINOGRAD_CASES = [(3, s) for s in WINOGRAD_SHAPES] + [(5, s) for s in WINOGRAD5_SHAPES]
WINOGRAD_IDS = [f"{fs}x{fs}-" + "x".join(map(str, s)) for fs, s in WINOGRAD_CASES]
# How many times the direct path's error Winograd's may be on the same data (test_winograd), per
# filter size: (forward and data gradient, weight gradient, plus this much of the largest
# output). The 5x5 transforms' own rounding (thirds and fifteenths, several float32 ulps) shows
# undiluted where the direct sum is short: at a 1x1 image only the centre tap reads data.
WINOGRAD_ERROR_RATIO = {3: (4, 4, 1e-7), 5: (10, 25, 1e-6)}


def _scaled_error(actual, expected):
    return float(np.max(np.abs(actual - expected))) / max(1.0, float(np.max(np.abs(expected))))


@pytest.mark.parametrize("fs,shape", WINOGRAD_CASES, ids=WINOGRAD_IDS)
def test_winograd(isa, rng, fs, shape):
    # Against the float64 reference at the direct path's tolerance, on every SIMD path. The
    # transforms add rounding (inputs combined before the product, outputs of up to a^2 products
    # summed after it), so the error is also compared with the direct path's on the same data
    # (WINOGRAD_ERROR_RATIO). 3x3: the forward and data gradient measured 0.4-1.9x the direct
    # error on these shapes, 1.0-1.3x at AlexNet's conv3-conv5 (each of the 16 GEMMs sums C
    # products where the direct path sums 9C); the weight gradient (variant 6) 0.67-1.57x. 5x5:
    # larger transform coefficients (B^T's up to 5/2, G's thirds and fifteenths): the forward and
    # data gradient measured 1.6-7.1x, the weight gradient 5.9-18x (absolute: at most 5e-6 of the
    # largest output, against the tolerance's 1e-5).
    c, h, w, n, f, pad, groups = shape
    x, wt, dy, kw = _problem(rng, (c, h, w, n, f, fs, pad, 1, groups))
    b, prev = rng.standard_normal(f), rng.standard_normal(dy.shape)
    f32 = lambda a: _on("cpu", a)  # noqa: E731
    dw_want = ref.conv_bwd_weights(x, dy, fs, **kw)
    checks = [
        ("conv_fwd", WINOGRAD, ref.conv_fwd(x, wt, **kw),
         lambda v: ops.conv_fwd(f32(x), f32(wt), variant=v, **kw)),
        ("conv_bwd_data", WINOGRAD, ref.conv_bwd_data(dy, wt, x.shape, **kw),
         lambda v: ops.conv_bwd_data(f32(dy), f32(wt), x.shape, variant=v, **kw)),
        ("conv_fwd bias+relu accumulate", WINOGRAD,
         np.maximum(prev + ref.conv_fwd(x, wt, **kw) + b[:, None, None, None], 0),
         lambda v: ops.conv_fwd(f32(x), f32(wt), f32(b), relu=True, out=f32(prev),
                                accumulate=True, variant=v, **kw)),
        ("conv_bwd_data accumulate", WINOGRAD, x + ref.conv_bwd_data(dy, wt, x.shape, **kw),
         lambda v: ops.conv_bwd_data(f32(dy), f32(wt), x.shape, out=f32(x), accumulate=True,
                                     variant=v, **kw)),
        ("conv_bwd_weights", WINOGRAD_WGRAD, dw_want,
         lambda v: ops.conv_bwd_weights(f32(x), f32(dy), fs, variant=v, **kw)),
        ("conv_bwd_weights accumulate", WINOGRAD_WGRAD, wt + dw_want,
         lambda v: ops.conv_bwd_weights(f32(x), f32(dy), fs, out=f32(wt), accumulate=True,
                                        variant=v, **kw)),
    ]
    for what, variant, want, run in checks:
        got, direct = run(variant).numpy(), run(1).numpy()
        assert_close(got, want, what=f"{what} winograd {fs}x{fs} on {isa}")
        err, err_direct = _scaled_error(got, want), _scaled_error(direct, want)
        bounds = WINOGRAD_ERROR_RATIO[fs]
        assert err <= bounds[variant == WINOGRAD_WGRAD] * err_direct + bounds[2], \
            f"{what} {fs}x{fs} on {isa}: error {err:.3g}, direct path's {err_direct:.3g}"


@pytest.mark.parametrize("fs", [3, 5])
def test_winograd_fused_epilogue_and_bits(rng, fs):
    # The fused bias and ReLU give the bits of the unfused ops; the threads split the tiles
    # (70 images, 25 tiles, 2 groups) and the bits are the same run after run.
    pad = fs // 2
    x, wt, dy, kw = _problem(rng, (16, 9, 9, 70, 18, fs, pad, 1, 2))
    x, wt, dy = (a.astype(np.float32) for a in (x, wt, dy))
    b = rng.standard_normal(18).astype(np.float32)
    fused = ops.conv_fwd(x, wt, b, relu=True, variant=WINOGRAD, **kw).numpy()
    y = ops.conv_fwd(x, wt, variant=WINOGRAD, **kw)
    ops.neuron_fwd(ops.bias_fwd(y, b), "relu", out=y)
    assert np.array_equal(fused.view(np.uint32), y.numpy().view(np.uint32))
    for _ in range(3):
        again = ops.conv_fwd(x, wt, b, relu=True, variant=WINOGRAD, **kw).numpy()
        assert np.array_equal(again.view(np.uint32), fused.view(np.uint32))
    dx = ops.conv_bwd_data(dy, wt, x.shape, variant=WINOGRAD, **kw).numpy()
    for _ in range(3):
        again = ops.conv_bwd_data(dy, wt, x.shape, variant=WINOGRAD, **kw).numpy()
        assert np.array_equal(again.view(np.uint32), dx.view(np.uint32))
    # The weight gradient: 9 chunks of 3 tiles per group, one group per thread; then 3 groups,
    # the threads' shares ending inside the second.
    for shape in [(16, 9, 9, 70, 18, fs, pad, 1, 2), (24, 9, 9, 70, 27, fs, pad, 1, 3)]:
        x, _, dy, kw = _problem(rng, shape)
        x, dy = x.astype(np.float32), dy.astype(np.float32)
        dw = ops.conv_bwd_weights(x, dy, fs, variant=WINOGRAD_WGRAD, **kw).numpy()
        for _ in range(3):
            again = ops.conv_bwd_weights(x, dy, fs, variant=WINOGRAD_WGRAD, **kw).numpy()
            assert np.array_equal(again.view(np.uint32), dw.view(np.uint32))


def test_winograd_selection(monkeypatch):
    # Variant 0 takes Winograd for 3x3 stride-1 layers with at least 64 channels and filters per
    # group; CONVNET_WINOGRAD=on / off forces it either way where it applies.
    def bits(shape, variant):
        x, wt, _, kw = _problem(np.random.default_rng(7), shape)
        y = ops.conv_fwd(x.astype(np.float32), wt.astype(np.float32), variant=variant, **kw)
        return y.numpy().view(np.uint32)

    small, wide = (8, 6, 6, 4, 8, 3, 1, 1, 1), (64, 4, 4, 2, 64, 3, 1, 1, 1)
    strided = (64, 7, 7, 2, 64, 3, 1, 2, 1)
    assert np.array_equal(bits(wide, 0), bits(wide, WINOGRAD))
    assert not np.array_equal(bits(small, 0), bits(small, WINOGRAD))
    strided_direct = bits(strided, 0)
    monkeypatch.setenv("CONVNET_WINOGRAD", "on")
    assert np.array_equal(bits(small, 0), bits(small, WINOGRAD))
    assert np.array_equal(bits(strided, 0), strided_direct)  # not stride 1: direct
    monkeypatch.setenv("CONVNET_WINOGRAD", "off")
    assert not np.array_equal(bits(wide, 0), bits(wide, WINOGRAD))
    monkeypatch.setenv("CONVNET_WINOGRAD", "sometimes")
    with pytest.raises(ValueError, match=r"conv_fwd: CONVNET_WINOGRAD must be auto, on or off, "
                                         r"got 'sometimes'"):
        bits(wide, 0)


def test_winograd_5x5_selection(isa):
    # Variant 0 takes Winograd F(2x2,5x5) for 5x5 stride-1 layers with at least 32 channels and
    # filters per group: the forward and data gradient on every path, the weight gradient on the
    # AVX-512 and AVX2 paths (winograd.h: winograd_pays).
    def same_bits(shape, op):
        x, wt, dy, kw = _problem(np.random.default_rng(7), shape)
        x, wt, dy = (a.astype(np.float32) for a in (x, wt, dy))
        run = {"conv_fwd": lambda v: ops.conv_fwd(x, wt, variant=v, **kw),
               "conv_bwd_data": lambda v: ops.conv_bwd_data(dy, wt, x.shape, variant=v, **kw),
               "conv_bwd_weights": lambda v: ops.conv_bwd_weights(x, dy, 5, variant=v, **kw)}[op]
        bits = lambda v: run(v).numpy().view(np.uint32)  # noqa: E731
        return np.array_equal(bits(0), bits(_winograd_variant(op)))

    wide, narrow = (64, 6, 6, 2, 64, 5, 2, 1, 2), (3, 6, 6, 2, 32, 5, 2, 1, 1)
    wider = (96, 6, 6, 2, 256, 5, 2, 1, 2)  # AlexNet conv2's 48 channels, 128 filters per group
    assert same_bits(wide, "conv_fwd") and same_bits(wide, "conv_bwd_data")
    assert same_bits(wide, "conv_bwd_weights") == (isa in ("avx512", "avx2"))
    assert same_bits(wider, "conv_bwd_weights") == (isa in ("avx512", "avx2"))
    for op in ["conv_fwd", "conv_bwd_data", "conv_bwd_weights"]:
        assert not same_bits(narrow, op)


def test_winograd_bad_arguments():
    x = np.zeros((4, 9, 9, 2), np.float32)
    with pytest.raises(ValueError, match=r"conv_fwd: variant 5 \(Winograd F\(2x2,3x3\) or "
                                         r"F\(2x2,5x5\)\) needs 3x3 or 5x5 filters and stride 1, "
                                         r"got 7x7 stride 1"):
        ops.conv_fwd(x, np.zeros((4, 7, 7, 4), np.float32), variant=WINOGRAD)
    with pytest.raises(ValueError, match=r"conv_bwd_data: variant 5 \(Winograd F\(2x2,3x3\) or "
                                         r"F\(2x2,5x5\)\) needs 3x3 or 5x5 filters and stride 1, "
                                         r"got 5x5 stride 2"):
        ops.conv_bwd_data(np.zeros((4, 3, 3, 2), np.float32), np.zeros((4, 5, 5, 4), np.float32),
                          x.shape, stride=2, variant=WINOGRAD)
    with pytest.raises(ValueError, match=r"conv_fwd: variant 7 does not exist"):
        ops.conv_fwd(x, np.zeros((4, 3, 3, 4), np.float32), variant=WINOGRAD + 2)  # 6: direct
    with pytest.raises(ValueError, match=r"conv_bwd_data: variant 7 does not exist"):
        ops.conv_bwd_data(np.zeros((4, 9, 9, 2), np.float32), np.zeros((4, 3, 3, 4), np.float32),
                          x.shape, padding=1, variant=WINOGRAD + 2)
    with pytest.raises(ValueError, match=r"conv_bwd_weights: variant 6 \(Winograd F\(2x2,3x3\) "
                                         r"or F\(2x2,5x5\)\) needs 3x3 or 5x5 filters and stride "
                                         r"1, got 4x4 stride 1"):
        ops.conv_bwd_weights(x, np.zeros((4, 6, 6, 2), np.float32), 4, variant=WINOGRAD_WGRAD)
    with pytest.raises(ValueError, match=r"conv_bwd_weights: variant 7 does not exist"):
        ops.conv_bwd_weights(x, np.zeros((4, 7, 7, 2), np.float32), 3, variant=WINOGRAD_WGRAD + 1)
