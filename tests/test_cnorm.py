"""Contrast normalisation (cnorm) on every backend against the float64 reference of
tests/ref_norm_pool.py, itself checked by finite differences."""
import numpy as np
import pytest

import convnet
from convnet import ops

import ref_norm_pool as ref
from gradcheck import assert_close, assert_grad

# (C, H, W, N, size): odd and even windows, windows larger than the image, batch 1, non-square.
SHAPES = [(3, 5, 4, 1, 3), (2, 4, 6, 3, 4), (4, 3, 3, 2, 5), (1, 6, 5, 2, 2), (2, 2, 3, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: "x".join(map(str, s)))
def test_reference_gradient(rng, shape):
    *xs, size = shape
    x, dy = rng.standard_normal(xs) * 3, rng.standard_normal(xs)
    alpha, beta, k = 0.2, 0.75, 1.5
    assert_grad(lambda v: ref.cnorm_fwd(v, size, alpha, beta, k)[0], x, dy,
                ref.cnorm_bwd(dy, x, size, alpha, beta, k))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("beta", [0.75, 0.5])
def test_matches_reference(device, rng, shape, beta):
    *xs, size = shape
    scale, k = 4.0, 1.0  # alpha = scale / size**2: large enough that the window sum matters
    x, dy = (rng.standard_normal(xs) * 3).astype(np.float32), rng.standard_normal(xs)
    ry, rm, rd = ref.cnorm_fwd(x, size, scale / size ** 2, beta, k)
    tx = convnet.tensor(x, device.split("/")[0])
    y, m, d = ops.cnorm_fwd(tx, size, scale, beta, k)
    assert_close(m.numpy(), rm, what="cnorm mean_diffs")
    assert_close(d.numpy(), rd, what="cnorm denoms")
    assert_close(y.numpy(), ry, what="cnorm_fwd")
    tdy = convnet.tensor(dy.astype(np.float32), device.split("/")[0])
    want = ref.cnorm_bwd(dy, x, size, scale / size ** 2, beta, k)
    assert_close(ops.cnorm_bwd(tdy, tx, y, m, d, size, scale, beta).numpy(), want,
                 what="cnorm_bwd")
    prev = rng.standard_normal(xs)
    dx = ops.cnorm_bwd(tdy, tx, y, m, d, size, scale, beta,
                       out=convnet.tensor(prev.astype(np.float32), device.split("/")[0]),
                       accumulate=True)
    assert_close(dx.numpy(), prev + want, what="cnorm_bwd accumulate")


def test_scale_by_denoms_checks_shapes(device):
    dev = device.split("/")[0]
    x = convnet.zeros((2, 3, 3, 2), device=dev)
    with pytest.raises(ValueError, match=r"scale_by_denoms: denoms has shape \(2, 3, 3\)"):
        ops.scale_by_denoms(x, convnet.zeros((2, 3, 3), device=dev), 0.75)
