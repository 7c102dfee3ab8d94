"""Op arguments: every size validated (no negative size meaning 'all', no wrap-round), the
output-size formulas computed in 64 bits and equal to the documented formula for any size a
config can give."""
import numpy as np
import pytest

from convnet import ops
from convnet.device import module_for

BIG = 2**31 - 1


def _ceil_div(a, b):
    return -(-a // b)


@pytest.mark.parametrize("img, f, pad, stride", [
    (224, 11, 0, 4), (13, 3, 1, 1), (1, 1, 0, 1), (5, 5, 0, BIG),
    (BIG, 1, 0, 1), (BIG, 3, BIG, 1), (10, 3, BIG, 2), (BIG, BIG, BIG, BIG), (7, 9, 1, 3),
])
def test_conv_out_size_is_the_formula_in_64_bits(img, f, pad, stride):
    assert ops.conv_out_size(img, f, pad, stride) == 1 + _ceil_div(2 * pad + img - f, stride)


@pytest.mark.parametrize("img, size, stride, start", [
    (55, 3, 2, 0), (13, 3, 2, 0), (BIG, 3, 2, 0), (BIG, 1, 1, -BIG + 1), (7, 2, BIG, 0),
    (BIG, BIG, BIG, 0), (5, 3, 3, -2),
])
def test_pool_out_size_is_the_formula_in_64_bits(img, size, stride, start):
    assert ops.pool_out_size(img, size, stride, start) == 1 + _ceil_div(img - start - size,
                                                                          stride)


@pytest.mark.parametrize("args", [
    (0, 1, 0, 1), (-5, 1, 0, 1), (10, 0, 0, 1), (10, 3, -1, 1), (10, 3, 0, 0), (10, 3, 0, -4),
    (BIG + 1, 3, 0, 1), (10, 3, 2**40, 1), (10, 3, 0, 2**33), (3, 9, 1, 1),
])
def test_conv_out_size_refuses_bad_sizes(args):
    with pytest.raises(ValueError):
        ops.conv_out_size(*args)


@pytest.mark.parametrize("args", [
    (10, 0, 1, 0), (10, 3, 0, 0), (10, 3, 1, 1), (10, 11, 1, 0), (-1, 1, 1, 0),
    (10, 3, 2**32, 0), (2**35, 3, 2, 0), (10, 3, 1, -2**40),
])
def test_pool_out_size_refuses_bad_windows(args):
    with pytest.raises(ValueError):
        ops.pool_out_size(*args)


def _f32(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("kw", [dict(m=-2), dict(n=-1), dict(k=-7), dict(m=0), dict(k=0),
                                dict(m=5), dict(n=9)])
def test_sgemm_sizes_are_checked(kw):
    a, b, c = _f32(4, 3), _f32(3, 6), _f32(4, 6)
    with pytest.raises(ValueError, match="sgemm"):
        ops.sgemm(a, b, c, **kw)
    with pytest.raises(ValueError, match="sgemm"):
        module_for("cpu").sgemm(a, b, c, False, False, 1.0, 0.0, kw.get("m"), kw.get("n"),
                                kw.get("k"), 0)


def test_sgemm_blocks_still_work():
    rs = np.random.RandomState(0)
    a, b = rs.rand(4, 3).astype(np.float32), rs.rand(3, 6).astype(np.float32)
    c = np.zeros((4, 6), np.float32)
    ops.sgemm(a, b, c, m=2, n=5, k=2)
    np.testing.assert_allclose(c[:2, :5], a[:2, :2] @ b[:2, :5], rtol=1e-6)
    assert not c[2:].any() and not c[:, 5:].any()


def test_pool_windows_do_not_wrap_round():
    x, y = _f32(2, 9, 9, 1), _f32(2, 3, 3, 1)
    # (outs - 1) * stride overflows 32 bits: the last window is far beyond the image.
    with pytest.raises(ValueError, match="must each overlap the image"):
        module_for("cpu").pool_fwd(x, y, 3, 2**30 + 1, 0, 3, 3, "max")
    with pytest.raises(ValueError, match="must each overlap the image"):
        module_for("cpu").pool_fwd(x, _f32(2, 5, 5, 1), 3, 2**30, -2**31 + 1, 5, 5, "max")


def test_conv_padding_near_2_to_31_is_refused_not_wrapped():
    x, w = _f32(3, 5, 5, 1), _f32(3, 3, 3, 4)
    for pad in (2**30, BIG):
        with pytest.raises(ValueError):
            module_for("cpu").conv_fwd(x, w, None, _f32(4, 3, 3, 1), pad, 1, 1, False, False, 0)
    with pytest.raises(ValueError, match="above"):
        module_for("cpu").conv_out_shape("conv_fwd", [3, 5, 5, 1], [3, 3, 3, 4], BIG, 1, 1)


def test_empty_arrays_with_huge_dimensions_are_refused():
    huge = np.zeros((2**31 + 3, 0), np.float32)
    with pytest.raises(ValueError, match="dimension above"):
        module_for("cpu").fill(huge, 1.0)
    x = np.zeros((3, 2**32, 0, 1), np.float32)
    with pytest.raises(ValueError, match="dimension above"):
        module_for("cpu").pool_fwd(x, _f32(3, 1, 1, 1), 3, 2, 0, 1, 1, "max")


@pytest.fixture
def emu():
    import convnet
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    return module_for("emu")


def test_device_indices_are_checked(emu):
    # Found by the fuzz suite: a division by zero (SIGFPE) and a read past a table.
    with pytest.raises(ValueError, match="sgemm_plan: device 154462 does not exist"):
        emu.sgemm_plan(6, 2, 6, 154462)
    with pytest.raises(ValueError, match="conv_plan: device -1 does not exist"):
        emu.conv_plan("conv_fwd", 3, 8, 8, 2, 4, 3, 1, 1, 1, -1)
    for fn in (emu.memory_stats, emu.synchronize, emu.compute_stream, emu.event_create):
        with pytest.raises(ValueError, match="does not exist"):
            fn(2**31 - 1)
    with pytest.raises(ValueError, match="enable_peer_access: device 99"):
        emu.enable_peer_access(0, 99)
    with pytest.raises(ValueError, match="sgemm_plan: m, n, k must be >= 1"):
        emu.sgemm_plan(-3, 2, 6, 0)


def test_buffer_ranges_cannot_wrap_round(emu):
    buf = emu.Buffer(16, 0)
    with pytest.raises(ValueError, match="exceed the buffer of 16 bytes"):
        emu.copy_from_host(buf, 2**64 - 4, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="exceed the buffer"):
        emu.copy_to_host(np.zeros(8, np.float32), buf, 0)


def test_wrong_names_and_kinds_are_argument_errors(emu):
    with pytest.raises(ValueError, match="unknown stream order 'max'"):
        emu.set_stream_order("max")
    dy = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError):
        module_for("cpu").neuron_bwd(dy, [1, 2], None, dy, 0, 0.0, 0.0, False)
    # Found by the fuzz suite: a failed cast inside the binding was a RuntimeError.
    z = np.zeros(1, np.int32)
    with pytest.raises(TypeError, match="assemble_batch: images must be a tensor"):
        module_for("cpu").assemble_batch(None, z, np.zeros((1, 2), np.int32), z, None,
                                         np.zeros((4, 4, 3), np.float32),
                                         np.zeros((3, 4, 4, 1), np.float32), 0)
    with pytest.raises(TypeError, match="assemble_batch: images\\[0\\] must be a tensor"):
        module_for("cpu").assemble_batch([None], z, np.zeros((1, 2), np.int32), z, None,
                                         np.zeros((4, 4, 3), np.float32),
                                         np.zeros((3, 4, 4, 1), np.float32), 0)
