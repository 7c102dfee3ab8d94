"""Locally-connected ops on every backend and kernel variant against tests/ref_local.py."""
import numpy as np
import pytest

import convnet
from convnet import ops

import ref_local as ref
from gradcheck import assert_close, assert_grad
from ref_conv import out_size

# (C, H, W, N, F, fs, padding, stride, groups): odd sizes, batch 1, non-square images, stride 2
# and 3 with padding, groups 2 and 3, windows hanging over the far edge (round-up rule), padding
# >= filter size, 1x1 filters, more than one 32-wide tile of filters, taps and images (the CUDA
# tiles), and cifar-local's local4 at a small batch.
SHAPES = [
    (3, 5, 7, 1, 4, 3, 1, 1, 1),
    (4, 7, 5, 3, 6, 3, 1, 3, 2),
    (6, 6, 7, 2, 9, 3, 2, 2, 3),
    (3, 8, 9, 2, 5, 4, 0, 3, 1),
    (2, 4, 5, 3, 3, 2, 2, 1, 1),
    (5, 3, 4, 2, 7, 1, 0, 1, 1),
    (5, 4, 3, 35, 40, 3, 1, 2, 1),
    (8, 3, 3, 33, 34, 3, 1, 1, 2),
]
IDS = ["x".join(map(str, s)) for s in SHAPES]


def _on(device, a):
    return convnet.tensor(np.asarray(a, np.float32), device.split("/")[0])


def _problem(rng, shape):
    c, h, w, n, f, fs, pad, stride, groups = shape
    ho, wo = out_size(h, fs, pad, stride), out_size(w, fs, pad, stride)
    x = rng.standard_normal((c, h, w, n))
    wt = rng.standard_normal((ho, wo, c // groups, fs, fs, f))
    dy = rng.standard_normal((f, ho, wo, n))
    return x, wt, dy, dict(padding=pad, stride=stride, groups=groups)


def _variants(op, device):
    return range(ops.local_variant_count(op, device=device.split("/")[0]))


def _run(fn, *args, **kw):
    """fn's result, or None for a kernel variant this CPU cannot run (AVX-512 on an AVX2 CPU)."""
    try:
        return fn(*args, **kw)
    except ValueError as e:
        if "not supported by this CPU" in str(e):
            return None
        raise


def _check(got, want, what):
    if got is not None:
        assert_close(got.numpy(), want, what=what)


@pytest.mark.parametrize("shape", [(3, 4, 5, 1, 4, 3, 1, 2, 2), (2, 5, 4, 2, 3, 2, 2, 3, 1),
                                   (3, 3, 4, 1, 6, 3, 0, 1, 3)])
def test_reference_gradients(rng, shape):
    x, w, dy, kw = _problem(rng, shape)
    fs = w.shape[3]
    assert_grad(lambda x_: ref.local_fwd(x_, w, **kw), x, dy,
                ref.local_bwd_data(dy, w, x.shape, **kw))
    assert_grad(lambda w_: ref.local_fwd(x, w_, **kw), w, dy,
                ref.local_bwd_weights(x, dy, fs, **kw))


def test_reference_is_a_conv_when_the_filters_agree(rng):
    # The same filters at every position: a convolution (ref_conv), round-up overhang included.
    import ref_conv
    x = rng.standard_normal((4, 7, 6, 2))
    wc = rng.standard_normal((2, 3, 3, 6))
    kw = dict(padding=1, stride=2, groups=2)
    ho, wo = out_size(7, 3, 1, 2), out_size(6, 3, 1, 2)
    wl = np.broadcast_to(wc, (ho, wo) + wc.shape)
    np.testing.assert_allclose(ref.local_fwd(x, wl, **kw), ref_conv.conv_fwd(x, wc, **kw),
                               rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_local_ops(device, rng, shape):
    x, w, dy, kw = _problem(rng, shape)
    fs = w.shape[3]
    tx, tw, tdy = (_on(device, a) for a in (x, w, dy))
    for v in _variants("local_fwd", device):
        _check(_run(ops.local_fwd, tx, tw, variant=v, **kw), ref.local_fwd(x, w, **kw),
               f"local_fwd variant {v}")
    for v in _variants("local_bwd_data", device):
        _check(_run(ops.local_bwd_data, tdy, tw, x.shape, variant=v, **kw),
               ref.local_bwd_data(dy, w, x.shape, **kw), f"local_bwd_data variant {v}")
    for v in _variants("local_bwd_weights", device):
        _check(_run(ops.local_bwd_weights, tx, tdy, fs, variant=v, **kw),
               ref.local_bwd_weights(x, dy, fs, **kw), f"local_bwd_weights variant {v}")


def test_local_accumulate_and_garbage_outputs(device, rng):
    x, w, dy, kw = _problem(rng, SHAPES[1])
    fs = w.shape[3]
    tx, tw, tdy = (_on(device, a) for a in (x, w, dy))
    prev = [rng.standard_normal(a.shape) for a in (dy, x, w)]
    want = [ref.local_fwd(x, w, **kw), ref.local_bwd_data(dy, w, x.shape, **kw),
            ref.local_bwd_weights(x, dy, fs, **kw)]
    got = [ops.local_fwd(tx, tw, out=_on(device, prev[0]), accumulate=True, **kw),
           ops.local_bwd_data(tdy, tw, x.shape, out=_on(device, prev[1]), accumulate=True, **kw),
           ops.local_bwd_weights(tx, tdy, fs, out=_on(device, prev[2]), accumulate=True, **kw)]
    for g, p, w_, name in zip(got, prev, want, ("fwd", "bwd_data", "bwd_weights")):
        assert_close(g.numpy(), p + w_, what=f"local_{name} accumulate")
    # Without accumulate the outputs are written, never read (NaN in them must not show).
    dev = device.split("/")[0]
    nan = [convnet.full(a.shape, np.nan, device=dev) for a in (dy, x, w)]
    ops.local_fwd(tx, tw, out=nan[0], **kw)
    ops.local_bwd_data(tdy, tw, x.shape, out=nan[1], **kw)
    ops.local_bwd_weights(tx, tdy, fs, out=nan[2], **kw)
    for g, w_ in zip(nan, want):
        assert_close(g.numpy(), w_)


def _all_outputs(device, x, w, dy, kw):
    fs = w.shape[3]
    tx, tw, tdy = (_on(device, a) for a in (x, w, dy))
    outs = []
    for op in ("local_fwd", "local_bwd_data", "local_bwd_weights"):
        for v in _variants(op, device):
            if op == "local_fwd":
                outs.append(_run(ops.local_fwd, tx, tw, variant=v, **kw))
            elif op == "local_bwd_data":
                outs.append(_run(ops.local_bwd_data, tdy, tw, x.shape, variant=v, **kw))
            else:
                outs.append(_run(ops.local_bwd_weights, tx, tdy, fs, variant=v, **kw))
    return [o.numpy().view(np.uint32) for o in outs if o is not None]


def test_emulated_thread_orders_give_the_same_bits(rng):
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    x, w, dy, kw = _problem(rng, SHAPES[7])
    previous = emu.thread_order()
    try:
        runs = []
        for order in ("forward", "reverse", "random:7"):
            emu.set_thread_order(order)
            runs.append(_all_outputs("emu:0", x, w, dy, kw))
    finally:
        emu.set_thread_order(previous)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(16, 6, 6, 64, 32, 3, 1, 1, 1), (10, 7, 5, 33, 12, 3, 1, 1, 2)])
def test_cpu_bits_do_not_depend_on_the_thread_count(rng, shape):
    # Positions (fwd, weight gradient) and channel slices (data gradient) are split between the
    # threads; each GEMM runs on one thread, so any thread count agrees bit for bit. With three
    # threads and two groups of 5 channels, a thread's slice spans both groups.
    x, w, dy, kw = _problem(rng, shape)
    threads = convnet.device.module_for("cpu")
    previous = threads.num_threads()
    try:
        runs = []
        for count in (1, 2, 3):
            threads.set_num_threads(count)
            runs.append(_all_outputs("cpu", x, w, dy, kw))
    finally:
        threads.set_num_threads(previous)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_bad_arguments(device):
    dev = device.split("/")[0]
    x = convnet.zeros((4, 5, 5, 2), device=dev)
    w = convnet.zeros((5, 5, 4, 3, 3, 6), device=dev)
    with pytest.raises(ValueError, match=r"local_fwd: w \(5, 5, 4, 3, 3, 6\) holds filters for "
                                         r"5x5 output positions but x \(4, 5, 5, 2\) \(filter 3, "
                                         r"padding 0, stride 1\) has 3x3"):
        ops.local_fwd(x, w)
    with pytest.raises(ValueError, match=r"local_fwd: w must be \(Ho, Wo, C/groups, fs, fs, F\)"):
        ops.local_fwd(x, convnet.zeros((4, 3, 3, 6), device=dev))
    with pytest.raises(ValueError, match="local_fwd: groups=3 does not divide the 4 channels"):
        ops.local_fwd(x, convnet.zeros((3, 3, 1, 3, 3, 6), device=dev), groups=3)
    with pytest.raises(ValueError, match="local_fwd: variant 9 does not exist"):
        ops.local_fwd(x, convnet.zeros((3, 3, 4, 3, 3, 6), device=dev), variant=9)
    with pytest.raises(ValueError, match=r"local_bwd_data: dy has shape"):
        ops.local_bwd_data(convnet.zeros((6, 2, 3, 2), device=dev),
                           convnet.zeros((3, 3, 4, 3, 3, 6), device=dev), x.shape)
    with pytest.raises(ValueError, match="unknown op 'local_fwdd'"):
        ops.local_variant_count("local_fwdd")
