"""Every numbered CUDA sgemm variant (csrc/cuda/gemm.cu) on the emulated device (both thread orders)
and on a real GPU when present: odd sizes that cut through every tile edge, all four transposes,
leading dimensions larger than the operands, alpha/beta, and beta == 0 never reading c (the
emulator fills fresh device memory with NaN). Also: the two thread orders give identical bits."""
import numpy as np
import pytest

import convnet
from convnet import ops
import cuda_plans as plans
from gradcheck import assert_close

# (m, n, k): odd sizes; 130 and 133 cross the 128-wide tile, 65 the 64-wide one, k = 1 and 45
# leave partial K steps of 8 and 16.
SHAPES = [(37, 29, 45), (1, 1, 1), (130, 67, 9), (5, 133, 17), (65, 3, 70)]


def _gpu_device(device):
    if device == "cpu":
        pytest.skip("CUDA kernels only (the CPU backend has its own tests)")
    return device


def _variants(device):
    return range(convnet.ops.sgemm_variant_count(device.split("/")[0]))


def _operands(rng, m, n, k, trans_a, trans_b, pad):
    """Stored arrays with `pad` extra columns (leading dimension > the operand's width) and the
    float64 views of op(a), op(b)."""
    sa = (k, m) if trans_a else (m, k)
    sb = (n, k) if trans_b else (k, n)
    a = rng.standard_normal((sa[0], sa[1] + pad)).astype(np.float32)
    b = rng.standard_normal((sb[0], sb[1] + pad)).astype(np.float32)
    opa = a[:, : sa[1]].astype(np.float64)
    opb = b[:, : sb[1]].astype(np.float64)
    return a, b, (opa.T if trans_a else opa), (opb.T if trans_b else opb)


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False),
                                             (True, True)])
def test_sgemm_variants(device, rng, m, n, k, trans_a, trans_b):
    dev = _gpu_device(device)
    a, b, opa, opb = _operands(rng, m, n, k, trans_a, trans_b, pad=0)
    ref = opa @ opb
    da, db = convnet.tensor(a, device=dev), convnet.tensor(b, device=dev)
    for v in _variants(dev):
        c = ops.sgemm(da, db, trans_a=trans_a, trans_b=trans_b, variant=v)
        assert_close(c.numpy(), ref, what=f"variant {v} {m}x{n}x{k} ta={trans_a} tb={trans_b}")


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
def test_sgemm_variants_leading_dims_alpha_beta(device, rng, trans_a, trans_b):
    """Operands are top-left blocks of wider arrays (lda, ldb, ldc not multiples of 4, then
    multiples of 4 so float4 paths run too); c keeps its values outside the (m, n) block."""
    dev = _gpu_device(device)
    m, n, k = 37, 29, 45
    for pad in (3, 4):
        a, b, opa, opb = _operands(rng, m, n, k, trans_a, trans_b, pad)
        c0 = rng.standard_normal((m + 2, n + pad)).astype(np.float32)
        ref = c0.astype(np.float64)
        ref[:m, :n] = 0.5 * (opa @ opb) - 2.0 * ref[:m, :n]
        da, db = convnet.tensor(a, device=dev), convnet.tensor(b, device=dev)
        for v in _variants(dev):
            c = convnet.tensor(c0, device=dev)
            ops.sgemm(da, db, c, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=-2.0,
                      m=m, n=n, k=k, variant=v)
            assert_close(c.numpy(), ref, what=f"variant {v} pad {pad}")


def test_sgemm_variants_beta_zero_ignores_c(device, rng):
    dev = _gpu_device(device)
    m, n, k = 37, 29, 45
    a, b, opa, opb = _operands(rng, m, n, k, False, False, pad=0)
    da, db = convnet.tensor(a, device=dev), convnet.tensor(b, device=dev)
    for v in _variants(dev):
        c = convnet.full((m, n), np.nan, device=dev)
        ops.sgemm(da, db, c, alpha=2.0, beta=0.0, variant=v)
        assert_close(c.numpy(), 2.0 * (opa @ opb), what=f"variant {v}")


def test_sgemm_variants_k_zero(device, rng):
    """k = 0: c = beta * c (the product is empty)."""
    dev = _gpu_device(device)
    a = convnet.tensor(np.zeros((5, 0), np.float32), device=dev)
    b = convnet.tensor(np.zeros((0, 7), np.float32), device=dev)
    c0 = rng.standard_normal((5, 7)).astype(np.float32)
    for v in _variants(dev):
        c = convnet.tensor(c0, device=dev)
        ops.sgemm(a, b, c, beta=3.0, variant=v)
        assert_close(c.numpy(), 3.0 * c0.astype(np.float64), what=f"variant {v}")


def test_sgemm_variants_thread_orders_bit_identical(rng):
    """A race-free kernel computes the same bits whatever order its threads run in."""
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    m, n, k = 130, 67, 45
    a = convnet.tensor(rng.standard_normal((k, m)).astype(np.float32), device="emu:0")
    b = convnet.tensor(rng.standard_normal((n, k)).astype(np.float32), device="emu:0")
    previous = emu.thread_order()
    try:
        for v in _variants("emu:0"):
            out = {}
            for order in ("forward", "reverse"):
                emu.set_thread_order(order)
                out[order] = ops.sgemm(a, b, trans_a=True, trans_b=True, variant=v).numpy()
            assert np.array_equal(out["forward"], out["reverse"]), f"variant {v}"
    finally:
        emu.set_thread_order(previous)


def test_sgemm_cuda_bad_variant(device):
    dev = _gpu_device(device)
    a = convnet.zeros((3, 3), device=dev)
    count = convnet.ops.sgemm_variant_count(dev.split("/")[0])
    with pytest.raises(ValueError, match=r"sgemm: variant .* does not exist"):
        ops.sgemm(a, a, variant=count)


@pytest.mark.parametrize("m,n", [(256, 256), (1024, 64), (5, 7), (4096, 4096)])
def test_sgemm_plan_fills_whole_waves(m, n):
    """sgemm variant 0's plan: the tile whose whole waves (of SMs x 2 blocks) times per-thread
    FMAs (cuda_plans.plan_cost) cost less, ties to 128x128; the plan string says
    tiles, blocks and waves."""
    import re
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    plan = convnet.device.module_for("emu").sgemm_plan(m, n, 64, 0)
    got = re.match(r"variant (\d): (\d+)x\d+ tile, (\d+) tiles = (\d+) blocks, (\d+) "
                   r"wave\(s\) of (\d+) \((\d+) SMs x 2\)$", plan)
    assert got, plan
    v, tile, tiles, blocks, waves, wave, sms = map(int, got.groups())
    assert tile == plans.gemm_like_tile(m, n, 1, wave) and v == (3 if tile == 128 else 4)
    assert tiles == blocks == plans.tiles(m, n, 1, tile) and waves == -(-blocks // wave)
    assert wave == 2 * sms
