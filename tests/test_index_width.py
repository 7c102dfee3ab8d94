"""The memory-bound CUDA kernels' paths under emulation (csrc/cuda/index_width.cuh, bias.cu,
partial_sums.cu): each runs on 32-bit offsets where the host has checked the sizes and on 64-bit
ones beyond 2^31 elements (forced here on small tensors with force_wide_indices), and on float4
loads where the buffers are 16-byte aligned and a row's length is a multiple of 4 (one float into
the buffers: scalar). Every combination, in forward and reverse thread order, must give the same
bits, and the float64 references' values."""
import numpy as np
import pytest

import convnet
from convnet import ops

from gradcheck import assert_close, tensor_at
import ref_conv as ref


@pytest.fixture
def emu():
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    mod = convnet.device.module_for("emu")
    order = mod.thread_order()
    yield mod
    mod.set_thread_order(order)
    mod.force_wide_indices(False)


def _every_path(emu, run):
    """run(offset) under each thread order and index width, offsets 0 (aligned) and 1."""
    results = []
    for order in ("forward", "reverse"):
        emu.set_thread_order(order)
        for wide in (False, True):
            emu.force_wide_indices(wide)
            assert emu.wide_indices_forced() == wide
            for offset in (0, 1):
                results.append(((order, wide, offset), run(offset)))
    emu.force_wide_indices(False)
    return results


def _assert_same_bits(results):
    (key0, first), rest = results[0], results[1:]
    for key, got in rest:
        for a, b in zip(first, got):
            assert np.array_equal(a, b), f"{key} differs from {key0}"


# (filters, per filter): rows of a multiple of 4 floats (float4 when aligned), of 13 (scalar with
# a partial last group), one float; more than 256 groups a row (several per thread).
@pytest.mark.parametrize("shape", [(6, 5, 8), (5, 13), (3, 1), (2, 1100), (1, 4)])
def test_bias_paths_bit_identical(emu, rng, shape):
    y, b = rng.standard_normal(shape), rng.standard_normal(shape[0])
    prev = rng.standard_normal(shape[0])

    def run(offset):
        ty = tensor_at(y, "emu:0", offset)
        ops.bias_fwd(ty, convnet.tensor(b.astype(np.float32), "emu:0"))
        tdy = tensor_at(y, "emu:0", offset)
        db = ops.bias_bwd(tdy).numpy()
        acc = ops.bias_bwd(tdy, out=tensor_at(prev, "emu:0", offset), accumulate=True).numpy()
        return ty.numpy(), db, acc

    results = _every_path(emu, run)
    _assert_same_bits(results)
    y_out, db, acc = results[0][1]
    assert_close(y_out, ref.bias_fwd(y, b), what="bias_fwd")
    assert_close(db, ref.bias_bwd(y), what="bias_bwd")
    assert_close(acc, prev + ref.bias_bwd(y), what="bias_bwd accumulate")


def test_weight_gradient_partial_sums_bit_identical(emu, rng):
    """The tiled weight gradient of a layer with P*N = 975 splits its reduction (conv_plan says
    how often); the partial sums are added by sum_partials_kernel: K*F = 288 floats, a multiple
    of 4 (float4 when dw is aligned)."""
    c, h, w, n, f, fs, pad, stride = 8, 13, 11, 5, 4, 3, 2, 1
    plan = emu.conv_plan("conv_bwd_weights", c, h, w, n, f, fs, pad, stride, 1, 0)
    assert "k-splits" in plan, plan
    x = rng.standard_normal((c, h, w, n))
    ho, wo = ref.out_size(h, fs, pad, stride), ref.out_size(w, fs, pad, stride)
    dy = rng.standard_normal((f, ho, wo, n))
    prev = rng.standard_normal((c, fs, fs, f))
    tx = convnet.tensor(x.astype(np.float32), "emu:0")
    tdy = convnet.tensor(dy.astype(np.float32), "emu:0")
    kw = dict(padding=pad, stride=stride, groups=1)

    def run(offset):
        outs = []
        for variant in (2, 3):
            dw = ops.conv_bwd_weights(tx, tdy, fs, variant=variant,
                                      out=tensor_at(np.zeros(prev.shape), "emu:0", offset), **kw)
            acc = ops.conv_bwd_weights(tx, tdy, fs, variant=variant,
                                       out=tensor_at(prev, "emu:0", offset), accumulate=True,
                                       **kw)
            outs += [dw.numpy(), acc.numpy()]
        return outs

    results = _every_path(emu, run)
    _assert_same_bits(results)
    want = ref.conv_bwd_weights(x, dy, fs, **kw)
    for i, got in enumerate(results[0][1]):
        assert_close(got, want + (prev if i % 2 else 0), what=f"dw output {i}")


def test_forcing_is_a_process_setting(emu):
    assert not emu.wide_indices_forced()
    emu.force_wide_indices(True)
    assert emu.wide_indices_forced()
    emu.force_wide_indices(False)
    assert not emu.wide_indices_forced()


def _costs(cost):
    """A cost record {"logprob", "top1", "top5"} as an array."""
    return np.array([cost["logprob"], cost["top1"], cost["top5"]], dtype=np.float64)


def _family_runs(rng):
    """(name, run(offset) -> arrays) for every family whose kernels take the index type: the
    float64 reference tests of each family check the 32-bit path, so identical bits here check
    the 64-bit one. Shapes: N % 4 == 0 (4 images a thread where aligned), odd sizes, padding."""
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    at = lambda a, offset: tensor_at(f32(a), "emu:0", offset)  # noqa: E731
    x = rng.standard_normal((6, 5, 7, 8))  # (C, H, W, N)
    dy_pool = rng.standard_normal((6, 2, 3, 8))
    k, n = 11, 12
    logits = rng.standard_normal((k, n)) * 3
    p = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    labels = convnet.tensor(rng.integers(0, k, n).astype(np.int32), "emu:0")
    w = rng.standard_normal((6, 3, 3, 4))
    dy_conv = rng.standard_normal((4, 5, 7, 8))
    conv = dict(padding=1, stride=1, groups=1)
    a, b = rng.standard_normal((13, 9)), rng.standard_normal((9, 7))
    flat = rng.standard_normal(37)

    def conv_direct(offset):
        tx, tw, tdy = at(x, offset), at(w, offset), at(dy_conv, offset)
        return [ops.conv_fwd(tx, tw, variant=1, **conv).numpy(),
                ops.conv_bwd_data(tdy, tw, x.shape, variant=1, **conv).numpy(),
                ops.conv_bwd_weights(tx, tdy, 3, variant=1, **conv).numpy()]

    lw = rng.standard_normal(ops.local_weight_shape(x.shape, 4, 3, **conv))

    def local(offset):
        tx, tw, tdy = at(x, offset), at(lw, offset), at(dy_conv, offset)
        out = []
        for v in (1, 2):
            out.append(ops.local_fwd(tx, tw, variant=v, **conv).numpy())
            out.append(ops.local_bwd_weights(tx, tdy, 3, variant=v, **conv).numpy())
        out.append(ops.local_bwd_data(tdy, tw, x.shape, variant=1, **conv).numpy())
        return out

    def norm(offset):
        out = []
        for fwd, bwd in ((ops.lrn_fwd, ops.lrn_bwd), (ops.rnorm_fwd, ops.rnorm_bwd)):
            for pow_ in (0.75, 0.6):
                tx = at(x, offset)
                y, denoms = fwd(tx, 3, 0.01, pow_, 2.0)
                dx = bwd(at(x * 0.5, offset), tx, y, denoms, 3, 0.01, pow_, 2.0)
                out += [y.numpy(), denoms.numpy(), dx.numpy()]
        return out

    def pool(offset):
        out = []
        for mode in ("max", "avg"):
            tx = at(x, offset)
            y = ops.pool_fwd(tx, mode, 3, 2)
            out += [y.numpy(), ops.pool_bwd(at(dy_pool, offset), tx, y, mode, 3, 2).numpy()]
        return out

    def softmax(offset):
        tx, tp, tdp = at(logits, offset), at(p, offset), at(p * 0.3 - 0.1, offset)
        probs, cost = ops.softmax_xent_fwd(tx, labels)
        return [ops.softmax(tx).numpy(), ops.softmax_bwd(tdp, tp).numpy(), probs.numpy(),
                _costs(cost), _costs(ops.logreg_cost(tp, labels)),
                ops.softmax_xent_bwd(tp, labels, 0.5).numpy(),
                ops.logreg_bwd(tp, labels, 0.5).numpy()]

    def gemm(offset):
        ta, tb = at(a, offset), at(b, offset)
        return [ops.sgemm(ta, tb, variant=v).numpy() for v in (1, 2)]

    def flat_ops(offset):
        t = at(flat, offset)
        y = ops.neuron_fwd(t, "tanh", 1.7, 0.67)
        g = ops.neuron_bwd(at(flat * 0.5, offset), t, y, "tanh", 1.7, 0.67)
        acc = at(flat, offset)
        ops.add_(acc, t, 0.25)
        filled = at(flat, offset)
        ops.fill_(filled, 1.5)
        wv, vv = at(flat, offset), at(flat * 0.1, offset)
        ops.sgd_update(wv, vv, at(flat * 0.01, offset), 0.1, 0.9, 0.0005)
        dy, mask = ops.dropout_fwd(t, 0.5, seed=3, stream=1, step=2)
        dx = ops.dropout_bwd(at(flat, offset), mask, 0.5)
        den = at(np.abs(flat) + 1.0, offset)
        return [y.numpy(), g.numpy(), acc.numpy(), filled.numpy(), wv.numpy(), vv.numpy(),
                dy.numpy(), mask.numpy(), dx.numpy(),
                ops.scale_by_denoms(t, den, 0.75).numpy()]

    return {"conv_direct": conv_direct, "local": local, "norm": norm, "pool": pool,
            "softmax": softmax, "gemm": gemm, "flat": flat_ops}


@pytest.mark.parametrize("family", ["conv_direct", "local", "norm", "pool", "softmax", "gemm",
                                    "flat"])
def test_wide_index_paths_bit_identical(emu, rng, family):
    """Each family's kernels on the 64-bit index path (forced) and the 32-bit one, aligned and
    one float into their buffers, in both thread orders: the same bits."""
    _assert_same_bits(_every_path(emu, _family_runs(rng)[family]))
