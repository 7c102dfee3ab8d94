"""The C++ batch assembly (csrc/cpu/augment.cpp) against the numpy path it replaced and the
per-image reference: every variant this CPU runs, odd sizes, batch 1, flips, edge windows,
streaming and cached stores, and bad arguments."""
import ctypes
import mmap

import numpy as np
import pytest

from convnet.data import augment, open_source
from convnet.data.loader import _aligned_floats

VARIANTS = list(range(1, augment.assemble_batch_variants() + 1))


def _problem(rs, M, H, W, crop, N, shift=True, edges=False):
    imgs = rs.randint(0, 256, (M, H, W, 3)).astype(np.uint8)
    index = rs.randint(0, M, N).astype(np.int32)
    offsets = np.stack([rs.randint(0, H - crop + 1, N), rs.randint(0, W - crop + 1, N)], 1)
    if edges:  # every column's window at the bottom-right corner (the gathers' edge case)
        offsets[:] = (H - crop, W - crop)
    flips = rs.rand(N) < 0.5
    sh = (rs.randn(N, 3) * 20).astype(np.float32) if shift else None
    mean = (rs.rand(3, crop, crop) * 255).astype(np.float32)
    return imgs, index, offsets.astype(np.int32), flips, sh, mean


def _numpy(imgs, index, offsets, flips, sh, mean):
    out = np.empty((3, mean.shape[1], mean.shape[1], len(index)), np.float32)
    augment.assemble_batch_numpy(imgs, index, offsets, flips, sh, mean, out)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("M,H,W,crop,N,shift,edges", [
    (1, 7, 9, 5, 1, True, False),       # batch 1, non-square image, odd crop
    (3, 7, 9, 7, 3, False, True),       # window touching the bottom-right pixel, no shift
    (5, 20, 20, 16, 17, True, False),   # one full block of 16 and a tail
    (4, 12, 13, 11, 33, True, True),
    (6, 9, 9, 9, 48, True, False),      # crop = image: every window ends at the last pixel
])
def test_matches_numpy_exactly(variant, M, H, W, crop, N, shift, edges):
    rs = np.random.RandomState(N * 7 + crop)
    imgs, index, offsets, flips, sh, mean = _problem(rs, M, H, W, crop, N, shift, edges)
    ref = _numpy(list(imgs), index, offsets, flips, sh, mean)
    for images in (list(imgs), imgs):  # a list of images or one (M, H, W, 3) array
        out = np.full_like(ref, np.nan)
        augment.assemble_batch(images, index, offsets, flips, sh, mean, out, variant)
        assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))  # bit for bit
    # and the clear per-image reference (float64 arithmetic: equal to float32 rounding)
    for j in range(N):
        col = augment.reference_column(imgs[index[j]], *offsets[j], flips[j], crop,
                                       np.zeros((crop, crop, 3), np.float32),
                                       None if sh is None else sh[j]) - mean
        np.testing.assert_allclose(ref[..., j], col, rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_and_unaligned_outputs(variant):
    """n a multiple of 16 into a 64-byte aligned buffer (streaming stores for variants 3, 5) and
    into a misaligned one (ordinary stores): both exact."""
    rs = np.random.RandomState(5)
    imgs, index, offsets, flips, sh, mean = _problem(rs, 8, 30, 27, 21, 32)
    ref = _numpy(imgs, index, offsets, flips, sh, mean)
    buf = _aligned_floats(ref.size + 1)
    for start in (0, 1):
        out = buf[start:start + ref.size].reshape(ref.shape)
        out[...] = np.nan
        augment.assemble_batch(imgs, index, offsets, flips, sh, mean, out, variant)
        assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("variant", VARIANTS)
def test_never_reads_past_an_image(variant):
    """An image whose last byte ends a page followed by an inaccessible page: a read past it would
    crash the test."""
    page = mmap.PAGESIZE
    H = W = 64  # 64 * 64 * 3 bytes = a whole number of pages
    assert H * W * 3 % page == 0
    pages = H * W * 3 // page
    buf = mmap.mmap(-1, (pages + 1) * page)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(addr + pages * page), ctypes.c_size_t(page), 0) == 0
    img = np.frombuffer(buf, np.uint8, count=H * W * 3).reshape(H, W, 3)
    img[...] = np.random.RandomState(0).randint(0, 256, img.shape)
    for crop in (64, 40):
        n = 16
        index = np.zeros(n, np.int32)
        offsets = np.full((n, 2), 64 - crop, np.int32)
        flips = np.arange(n) % 2 == 1
        mean = np.zeros((3, crop, crop), np.float32)
        out = np.empty((3, crop, crop, n), np.float32)
        augment.assemble_batch([img], index, offsets, flips, None, mean, out, variant)
        assert np.array_equal(out, _numpy([img], index, offsets, flips, None, mean))


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_and_default_variant(threads):
    from convnet.device import module_for
    cpu = module_for("cpu")
    before = cpu.num_threads()
    cpu.set_num_threads(threads)
    try:
        rs = np.random.RandomState(threads)
        imgs, index, offsets, flips, sh, mean = _problem(rs, 10, 40, 40, 32, 64)
        ref = _numpy(imgs, index, offsets, flips, sh, mean)
        out = np.empty_like(ref)
        augment.assemble_batch(imgs, index, offsets, flips, sh, mean, out)
        assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))
    finally:
        cpu.set_num_threads(before)


@pytest.mark.parametrize("mode", ["train", "test", "multiview"])
def test_pipeline_kernel_equals_numpy_path(mode):
    ds = open_source("synthetic:size=20,train=60,test=40,classes=10", crop=13, workers=0)
    src = ds.source
    args = dict(size=src.size, crop=13, mean=src.mean, eigvals=src.eigvals, eigvecs=src.eigvecs)
    kern = augment.Assembler(**args)
    nump = augment.Assembler(**args, impl="numpy")
    split = 0 if mode == "train" else 1
    idx = augment.epoch_order(src.count(split), 4, 1)[:17]
    outs = []
    for asm in (kern, nump):
        flat = np.full(3 * 13 * 13 * 17 * 10, np.nan, np.float32)
        lab = np.empty(170, np.int32)
        n, _ = asm.build(src, split, mode, idx, None, src.labels(split), flat, lab, seed=4, epoch=1)
        outs.append((flat[:3 * 13 * 13 * n].copy(), lab[:n].copy()))
    assert np.array_equal(outs[0][0].view(np.uint32), outs[1][0].view(np.uint32))
    assert np.array_equal(outs[0][1], outs[1][1])


def test_bad_arguments():
    rs = np.random.RandomState(0)
    imgs, index, offsets, flips, sh, mean = _problem(rs, 2, 10, 10, 8, 4)
    out = np.empty((3, 8, 8, 4), np.float32)
    call = augment.assemble_batch
    with pytest.raises(TypeError, match=r"assemble_batch: images\[1\] must be uint8"):
        call([imgs[0], imgs[1].astype(np.float32)], index, offsets, flips, sh, mean, out)
    with pytest.raises(ValueError, match=r"assemble_batch: images\[1\] has shape \(9, 10, 3\), expected \(10, 10, 3\)"):
        call([imgs[0], imgs[1, :9].copy()], index, offsets, flips, sh, mean, out)
    with pytest.raises(ValueError, match="assemble_batch: images: numpy array of shape .* is not C-contiguous"):
        call(imgs[:, :, ::-1], index, offsets, flips, sh, mean, out)
    with pytest.raises(ValueError, match=r"assemble_batch: index\[2\] = 5 but there are 2 images"):
        call(imgs, np.array([0, 1, 5, 0]), offsets, flips, sh, mean, out)
    with pytest.raises(ValueError, match=r"offsets\[0\] = \(3, 0\) puts the 8x8 window outside the 10x10 image"):
        call(imgs, index, np.array([[3, 0]] * 4), flips, sh, mean, out)
    with pytest.raises(ValueError, match=r"assemble_batch: out has shape \(3, 8, 8, 5\), expected \(3, 8, 8, 4\)"):
        call(imgs, index, offsets, flips, sh, mean, np.empty((3, 8, 8, 5), np.float32))
    with pytest.raises(ValueError, match=r"assemble_batch: shift has shape \(4, 2\), expected \(4, 3\)"):
        call(imgs, index, offsets, flips, sh[:, :2], mean, out)
    with pytest.raises(ValueError, match="crop 12 .* does not fit images of 10x10"):
        call(imgs, index, offsets, flips, sh, np.zeros((3, 12, 12), np.float32),
             np.empty((3, 12, 12, 4), np.float32))
    with pytest.raises(ValueError, match="assemble_batch: variant 9 is not available"):
        call(imgs, index, offsets, flips, sh, mean, out, variant=9)
    ro = np.empty((3, 8, 8, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="assemble_batch: output out is read-only"):
        call(imgs, index, offsets, flips, sh, mean, ro)
