"""The CUDA convolution kernels (csrc/cuda/conv.cu) on shapes aimed at their tiling: filters,
channels and filter taps crossing the 64-wide tiles, group slices that break float4 alignment, and
weight-gradient reductions long enough to be split into several partial sums. Every variant, on
the emulated device in both thread orders (and a real GPU when present), against tests/ref_conv.py;
then the two thread orders must give identical bits (no races, no order-dependent reductions)."""
import numpy as np
import pytest

import convnet
from convnet import ops

import cuda_plans as plans
import ref_conv as ref
from gradcheck import assert_close

# (C, H, W, N, F, fs, padding, stride, groups)
SHAPES = [
    (3, 6, 5, 2, 67, 3, 1, 1, 1),   # F = 67: two filter tiles, the second with 3 rows
    (66, 4, 3, 1, 2, 2, 0, 1, 1),   # Cg = 66: two channel tiles in bwd_data; K = 264 taps
    (10, 9, 7, 3, 10, 3, 1, 2, 2),  # Fg = 5, Cg = 5: group slices of w / dw not 16-byte aligned
    (8, 13, 11, 5, 4, 3, 2, 1, 1),  # P*N = 15*13*5 = 975: the weight gradient in partial sums
    (2, 12, 12, 4, 8, 5, 0, 4, 1),  # stride 4 > 1 with round-up overhang (Ho = Wo = 3)
]
IDS = ["x".join(map(str, s)) for s in SHAPES]


def _gpu_device(device):
    if device == "cpu":
        pytest.skip("CUDA kernels only (the CPU backend has its own tests)")
    return device


def _problem(rng, shape):
    c, h, w, n, f, fs, pad, stride, groups = shape
    x = rng.standard_normal((c, h, w, n))
    wt = rng.standard_normal((c // groups, fs, fs, f))
    ho, wo = ref.out_size(h, fs, pad, stride), ref.out_size(w, fs, pad, stride)
    dy = rng.standard_normal((f, ho, wo, n))
    return x, wt, dy, dict(padding=pad, stride=stride, groups=groups)


def _on(device, a):
    return convnet.tensor(np.asarray(a, np.float32), device)


def _run_all(device, x, w, dy, kw, variant, accumulate=False, prev=None):
    """conv_fwd, conv_bwd_data, conv_bwd_weights of one variant, as numpy arrays. With
    `accumulate`, each adds to the matching array of `prev`."""
    outs = {}
    y0, dx0, dw0 = prev if prev is not None else (None, None, None)
    outs["y"] = ops.conv_fwd(_on(device, x), _on(device, w), variant=variant,
                             out=None if y0 is None else _on(device, y0),
                             accumulate=accumulate, **kw).numpy()
    outs["dx"] = ops.conv_bwd_data(_on(device, dy), _on(device, w), x.shape, variant=variant,
                                   out=None if dx0 is None else _on(device, dx0),
                                   accumulate=accumulate, **kw).numpy()
    outs["dw"] = ops.conv_bwd_weights(_on(device, x), _on(device, dy), w.shape[1],
                                      variant=variant,
                                      out=None if dw0 is None else _on(device, dw0),
                                      accumulate=accumulate, **kw).numpy()
    return outs


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_cuda_variants(device, rng, shape):
    dev = _gpu_device(device)
    x, w, dy, kw = _problem(rng, shape)
    want = {"y": ref.conv_fwd(x, w, **kw), "dx": ref.conv_bwd_data(dy, w, x.shape, **kw),
            "dw": ref.conv_bwd_weights(x, dy, w.shape[1], **kw)}
    for v in range(ops.conv_variant_count("conv_fwd", device=dev.split("/")[0])):
        got = _run_all(dev, x, w, dy, kw, v)
        for name in want:
            assert_close(got[name], want[name], what=f"{name} variant {v} {shape}")


def test_conv_cuda_variants_accumulate(device, rng):
    dev = _gpu_device(device)
    x, w, dy, kw = _problem(rng, SHAPES[3])
    prev = [rng.standard_normal(a.shape) for a in (dy, x, w)]
    want = {"y": prev[0] + ref.conv_fwd(x, w, **kw),
            "dx": prev[1] + ref.conv_bwd_data(dy, w, x.shape, **kw),
            "dw": prev[2] + ref.conv_bwd_weights(x, dy, w.shape[1], **kw)}
    for v in range(ops.conv_variant_count("conv_fwd", device=dev.split("/")[0])):
        got = _run_all(dev, x, w, dy, kw, v, accumulate=True, prev=prev)
        for name in want:
            assert_close(got[name], want[name], what=f"{name} accumulate variant {v}")


def test_conv_cuda_thread_orders_bit_identical(rng):
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    previous = emu.thread_order()
    try:
        for shape in (SHAPES[2], SHAPES[3]):
            x, w, dy, kw = _problem(rng, shape)
            for v in range(ops.conv_variant_count("conv_fwd", device="emu")):
                runs = []
                for order in ("forward", "reverse"):
                    emu.set_thread_order(order)
                    runs.append(_run_all("emu:0", x, w, dy, kw, v))
                    runs[-1]["db"] = ops.bias_bwd(_on("emu:0", dy)).numpy()
                for name in runs[0]:
                    assert np.array_equal(runs[0][name], runs[1][name]), \
                        f"{name} variant {v} {shape}: thread orders differ"
    finally:
        emu.set_thread_order(previous)


def test_fast_div_formula():
    """csrc/cuda/fast_div.cuh's n / d = (umulhi(n, mul) + n) >> s, mul = 2^32 (2^s - d) / d + 1,
    s = ceil(log2 d): exact against integer division over every divisor up to 3000, a few large
    ones, and the edge dividends of each (0, d - 1, d, d + 1, 2^31 - 1) plus random ones."""
    rng = np.random.default_rng(7)
    divisors = list(range(1, 3001)) + [65535, 65536, 387200, 2 ** 20 + 1, 2 ** 31 - 1]
    for d in divisors:
        s = max(0, (d - 1).bit_length())
        mul = (2 ** 32 * (2 ** s - d)) // d + 1
        assert mul < 2 ** 32
        n = np.concatenate([[0, 1, d - 1, d, d + 1, 2 * d - 1, 2 ** 31 - 2, 2 ** 31 - 1],
                            rng.integers(0, 2 ** 31, 64)]).astype(np.uint64)
        n = n[n < 2 ** 31]
        got = (((n * np.uint64(mul)) >> np.uint64(32)) + n) >> np.uint64(s)
        assert np.array_equal(got, n // np.uint64(d)), f"divisor {d}"


def _plan_numbers(plan):
    """(variant, tile, blocks, splits, waves, wave, sms) from a plan string of conv_plan or
    sgemm_plan: 'variant 3: 128x128 tile, 4 tiles x 2 k-splits of 64 = 8 blocks, 2 wave(s) of
    4 (2 SMs x 2)'."""
    import re
    m = re.match(r"variant (\d): (\d+)x\d+ tile, (\d+) tiles(?: x (\d+) k-splits of \d+)? = "
                 r"(\d+) blocks, (\d+) wave\(s\) of (\d+) \((\d+) SMs x 2\)$", plan)
    assert m, plan
    v, tile, tiles, splits, blocks, waves, wave, sms = m.groups()
    return (int(v), int(tile), int(tiles), int(splits or 1), int(blocks), int(waves), int(wave),
            int(sms))


def _tile_waste(cg, stride):
    """bwd_data's tile work per useful FMA: stride^2 (taps that land nowhere) x idle rows."""
    return stride * stride * -(-cg // 64) * 64 / cg


@pytest.mark.parametrize("shape", SHAPES + [(96, 27, 27, 128, 256, 5, 2, 1, 2)],
                         ids=IDS + ["conv2"])
def test_conv_plans_fill_whole_waves(shape):
    """Variant 0's launch plan (conv_plan): blocks = tiles x splits, waves = ceil(blocks / (SMs x
    2)), and the tile is the cheaper in whole waves x per-thread FMAs, a 64x64 tile's FMA
    costed at plans.TILE64_FMA_COST (ties: 128x128)."""
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    c, h, w, n, f, fs, pad, stride, groups = shape
    ho, wo = ref.out_size(h, fs, pad, stride), ref.out_size(w, fs, pad, stride)
    for op, rows, cols in (("conv_fwd", f // groups, ho * wo * n),
                           ("conv_bwd_data", c // groups, h * w * n)):
        plan = emu.conv_plan(op, c, h, w, n, f, fs, pad, stride, groups, 0)
        if op == "conv_bwd_data" and stride > 1 and _tile_waste(c // groups, stride) > 8:
            assert plan.startswith("variant 1 (strided, few channels"), plan
            continue
        v, tile, tiles, splits, blocks, waves, wave, sms = _plan_numbers(plan)
        assert wave == 2 * sms and splits == 1 and blocks == tiles
        assert tiles == plans.tiles(rows, cols, groups, tile) and waves == -(-blocks // wave)
        assert tile == plans.gemm_like_tile(rows, cols, groups, wave)
        assert v == (3 if tile == 128 else 2)
    v, tile, tiles, splits, blocks, waves, wave, sms = _plan_numbers(
        emu.conv_plan("conv_bwd_weights", c, h, w, n, f, fs, pad, stride, groups, 0))
    assert (tile, splits) == plans.wgrad_plan(c // groups * fs * fs, f // groups, groups,
                                         ho * wo * n, wave)
    assert tiles == plans.tiles(c // groups * fs * fs, f // groups, groups, tile)
    assert blocks == tiles * splits and waves == -(-blocks // wave)
    assert splits == 1 or ho * wo * n // splits >= 8 * (8 if tile == 128 else 16)
    with pytest.raises(ValueError, match="unknown op"):
        emu.conv_plan("conv_sideways", c, h, w, n, f, fs, pad, stride, groups, 0)


def test_conv_cuda_wide_filters(device, rng):
    """Filters wider than 15 (the tap bits of conv_taps.cuh): variant 0 runs the direct kernels,
    the tiled variants say why they cannot."""
    dev = _gpu_device(device)
    shape = (2, 17, 16, 2, 3, 16, 0, 1, 1)
    x, w, dy, kw = _problem(rng, shape)
    got = _run_all(dev, x, w, dy, kw, 0)
    assert_close(got["y"], ref.conv_fwd(x, w, **kw), what="y, 16x16 filter")
    assert_close(got["dx"], ref.conv_bwd_data(dy, w, x.shape, **kw), what="dx, 16x16 filter")
    assert_close(got["dw"], ref.conv_bwd_weights(x, dy, 16, **kw), what="dw, 16x16 filter")
    for v in (2, 3):
        with pytest.raises(ValueError, match="wider than 15"):
            ops.conv_fwd(_on(dev, x), _on(dev, w), variant=v, **kw)
        with pytest.raises(ValueError, match="wider than 15"):
            ops.conv_bwd_data(_on(dev, dy), _on(dev, w), x.shape, variant=v, **kw)
        with pytest.raises(ValueError, match="wider than 15"):
            ops.conv_bwd_weights(_on(dev, x), _on(dev, dy), 16, variant=v, **kw)


# AlexNet's conv layers as bench_conv_cuda.py runs them (c, size, f, fs, pad, stride, groups),
# and per pass the tile that ran it faster on an H200 (132 SMs) in both GPU runs (BENCHMARKS.md,
# "NVIDIA H200: the second run"); conv1's data gradient runs the direct kernel.
ALEXNET_H200_FASTER = {
    "conv1": ((3, 224, 96, 11, 0, 4, 1), {"fwd": 128, "bwd_weights": 128}),
    "conv2": ((96, 27, 256, 5, 2, 1, 2), {"fwd": 128, "bwd_data": 64, "bwd_weights": 128}),
    "conv3": ((256, 13, 384, 3, 1, 1, 1), {"fwd": 128, "bwd_data": 64, "bwd_weights": 128}),
    "conv4": ((384, 13, 384, 3, 1, 1, 2), {"fwd": 64, "bwd_data": 64, "bwd_weights": 64}),
    "conv5": ((384, 13, 256, 3, 1, 1, 2), {"fwd": 64, "bwd_data": 64, "bwd_weights": 128}),
}


@pytest.mark.parametrize("layer", list(ALEXNET_H200_FASTER))
def test_conv_plan_cost_picks_the_tile_measured_faster_on_an_h200(layer):
    """The plan's cost (the formula test_conv_plans_fill_whole_waves ties to conv_plan) at an
    H200's wave of 264 blocks picks, for each AlexNet pass at batch 128, the tile that ran it
    faster there: a 64x64 tile's FMA costed as a 128x128's had picked the 64x64 tile for conv1's
    and conv2's forward and three weight gradients, 1.18-1.36x slower."""
    (c, size, f, fs, pad, stride, groups), faster = ALEXNET_H200_FASTER[layer]
    n, wave = 128, 264
    out = ref.out_size(size, fs, pad, stride)
    pn = out * out * n
    got = {"fwd": plans.gemm_like_tile(f // groups, pn, groups, wave),
           "bwd_weights": plans.wgrad_plan(c // groups * fs * fs, f // groups, groups, pn, wave)[0]}
    if "bwd_data" in faster:
        got["bwd_data"] = plans.gemm_like_tile(c // groups, size * size * n, groups, wave)
    assert got == faster


def test_conv_bwd_data_plans_the_direct_kernel_where_the_tile_mostly_multiplies_zeros():
    """AlexNet's conv1 (3 channels, stride 4): the tiled data gradient took 306 ms on an H200,
    the direct kernel 5.1 ms; variant 0 plans the direct one there. conv2-conv5 (stride 1, and
    conv1's forward and weight gradient) keep the tiles."""
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    conv1 = (3, 224, 224, 128, 96, 11, 2, 4, 1)
    assert emu.conv_plan("conv_bwd_data", *conv1, 0).startswith("variant 1 (strided, few ")
    assert _plan_numbers(emu.conv_plan("conv_fwd", *conv1, 0))[0] in (2, 3)
    assert _plan_numbers(emu.conv_plan("conv_bwd_weights", *conv1, 0))[0] in (2, 3)
    for layer in [(96, 27, 27, 128, 256, 5, 2, 1, 2), (256, 13, 13, 128, 384, 3, 1, 1, 1),
                  (64, 27, 27, 128, 64, 3, 1, 2, 1)]:  # the last: stride 2, waste 4
        assert _plan_numbers(emu.conv_plan("conv_bwd_data", *layer, 0))[0] in (2, 3), layer


def test_conv_plans_fall_back_beyond_32_bit_indices():
    """The tiled variants index in 32 bits: variant 0 plans the direct kernels (64-bit indices)
    when a tensor, or an index a gather forms before its bounds test, could pass 2^31, and for
    filters wider than 15 — decided from the shapes alone, so no huge tensor is needed."""
    if "emu" not in convnet.backends():
        pytest.skip("convnet was built without the emulated backend")
    emu = convnet.device.module_for("emu")
    ops_ = ("conv_fwd", "conv_bwd_data", "conv_bwd_weights")
    # (C, H, W, N, F, fs, padding, stride, groups)
    tiled = [(1, 16384, 16384, 1, 1, 1, 0, 1, 1), (96, 27, 27, 128, 256, 5, 2, 1, 2)]
    direct = [
        (2, 32768, 32768, 1, 1, 1, 0, 1, 1),   # x of 2^31 elements
        (1, 16384, 16384, 4, 1, 1, 0, 1, 1),   # 2^30 elements, gather indices past 2^31
        (1, 8192, 8192, 1, 64, 1, 0, 1, 1),    # y of 2^32 elements
        (3, 40, 40, 2, 4, 16, 0, 1, 1),        # a 16x16 filter
    ]
    for shape in tiled:
        for op in ops_:
            assert emu.conv_plan(op, *shape, 0).startswith(("variant 2", "variant 3")), shape
    for shape in direct:
        for op in ops_:
            assert emu.conv_plan(op, *shape, 0).startswith("variant 1"), (op, shape)
