"""SGEMM on every backend and every numbered variant against float64 numpy."""
import numpy as np
import pytest

import convnet
from convnet import ops

from gradcheck import assert_close
from isa_paths import cpu_isa, cpu_threads, isa  # noqa: F401  (isa: fixture)

SIZES = [(1, 1, 1), (7, 9, 5), (13, 33, 17), (37, 45, 300), (100, 70, 513), (15, 129, 2)]


@pytest.fixture(autouse=True)
def _backend_has_gemm(request):
    # The CUDA SGEMM is written on another branch; until it is merged the emulated/CUDA modules of
    # a tree may lack it.
    if "device" not in request.fixturenames:
        return
    device = request.getfixturevalue("device")
    if not hasattr(convnet.device.module_for(device.split(":")[0]), "sgemm"):
        pytest.skip(f"the {device} backend has no sgemm in this build")


def _variants(device):
    return range(ops.sgemm_variant_count(device.split("/")[0]))


def _sgemm(*args, **kw):
    try:
        return ops.sgemm(*args, **kw)
    except ValueError as e:
        if "not supported by this CPU" in str(e):
            pytest.skip(str(e))
        raise


def _emulated(device):
    return device.startswith("emu")


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m,n,k", SIZES)
def test_sgemm(device, rng, m, n, k, trans_a, trans_b):
    if _emulated(device) and m * n * k > 20000:
        pytest.skip("kept small under emulation")
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    c0 = rng.standard_normal((m, n))
    want = 0.5 * (a.T if trans_a else a) @ (b.T if trans_b else b) - 2.0 * c0
    ta, tb = convnet.tensor(a, device), convnet.tensor(b, device)
    for v in _variants(device):
        c = convnet.tensor(c0, device)
        _sgemm(ta, tb, c, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=-2.0, variant=v)
        assert_close(c.numpy(), want, what=f"variant {v}")
        plain = _sgemm(ta, tb, trans_a=trans_a, trans_b=trans_b, variant=v)
        assert_close(plain.numpy(), (a.T if trans_a else a) @ (b.T if trans_b else b),
                     what=f"variant {v}, c allocated")


def test_sgemm_partial_row_tiles(device, rng):
    # m from 1 to 28 leaves every possible partial tile of the 6- and 14-row micro-kernels.
    n, k = 33, 9
    b = rng.standard_normal((k, n))
    tb = convnet.tensor(b, device)
    for m in range(1, 29):
        a = rng.standard_normal((m, k))
        ta = convnet.tensor(a, device)
        for v in _variants(device):
            c = _sgemm(ta, tb, variant=v)
            assert_close(c.numpy(), a @ b, what=f"m {m}, variant {v}")


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_sgemm_leading_dimensions(device, rng, trans_a, trans_b):
    # op(a), op(b) and c are top-left blocks of larger arrays: the row lengths are lda/ldb/ldc.
    m, n, k = 11, 19, 7
    a = rng.standard_normal((k + 3, m + 5) if trans_a else (m + 3, k + 5))
    b = rng.standard_normal((n + 2, k + 4) if trans_b else (k + 2, n + 4))
    c0 = rng.standard_normal((m + 1, n + 6))
    c = convnet.tensor(c0, device)
    for v in _variants(device):
        c.copy_(convnet.tensor(c0, device))
        _sgemm(convnet.tensor(a, device), convnet.tensor(b, device), c, trans_a=trans_a,
               trans_b=trans_b, alpha=1.5, beta=1.0, m=m, n=n, k=k, variant=v)
        opa = (a.T if trans_a else a)[:m, :k]
        opb = (b.T if trans_b else b)[:k, :n]
        want = c0.copy()
        want[:m, :n] += 1.5 * opa @ opb
        assert_close(c.numpy(), want, what=f"variant {v}")


def test_sgemm_beta_zero_never_reads_c(device, rng):
    a, b = rng.standard_normal((9, 6)), rng.standard_normal((6, 40))
    for v in _variants(device):
        c = convnet.full((9, 40), np.nan, device=device)
        _sgemm(convnet.tensor(a, device), convnet.tensor(b, device), c, variant=v)
        assert_close(c.numpy(), a @ b, what=f"variant {v}")


def test_sgemm_k_zero(device):
    c = convnet.full((3, 4), 2.0, device=device)
    a, b = convnet.zeros((3, 0), device=device), convnet.zeros((0, 4), device=device)
    for v in _variants(device):
        _sgemm(a, b, c, beta=0.5, variant=v)
        c2 = convnet.full((3, 4), np.nan, device=device)
        _sgemm(a, b, c2, variant=v)
        assert (c2.numpy() == 0).all()
    assert np.allclose(c.numpy(), 2.0 * 0.5 ** len(_variants(device)))


def test_sgemm_large_cpu(rng):
    # Several cache blocks in every dimension, both threads, the k-split path (k >> m, n); variant
    # 0 takes the 14x32 AVX-512 tile for the first two and the 6x64 one for the last two.
    for m, n, k in [(700, 3100, 600), (40, 30, 9000), (130, 2100, 300), (600, 700, 100)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        want = a.astype(np.float64) @ b
        for v in _variants("cpu"):
            assert_close(_sgemm(a, b, variant=v).numpy(), want, what=f"{m}x{n}x{k} variant {v}")


def test_sgemm_row_split_bits_cpu(rng, isa):
    """m > n: the threads split the rows (the FC layers' shapes: n = 128 images, or B wider than
    one column block); so they do where m <= n when the column blocks would be narrower than 32
    panels and each thread's rows fill an A block (the last two shapes). Each element is summed in the
    same order whatever the split, so every variant gives the bits of its one-thread run, call
    after call."""
    variants = {"portable": [0, 1], "avx2": [0, 2], "avx512": [0, 3, 4]}[isa]
    for m, n, k in [(2001, 128, 300), (997, 45, 640), (1500, 1100, 130), (700, 1500, 600),
                    (1001, 1001, 513)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        want = a.astype(np.float64) @ b
        for v in variants:
            with cpu_threads(1):
                one = ops.sgemm(a, b, variant=v).numpy()
            with cpu_threads(2):
                runs = [ops.sgemm(a, b, variant=v).numpy() for _ in range(3)]
            assert_close(runs[0], want, what=f"{isa}, {m}x{n}x{k}, variant {v}")
            for r in runs:
                assert np.array_equal(r.view(np.uint32), one.view(np.uint32)), (m, n, k, v)


@pytest.mark.parametrize("trans_a", [False, True])
def test_sgemm_column_split_bits_cpu(rng, isa, trans_a):
    """m <= n, rows too few to split: the threads take blocks of columns from a counter (two or
    more each; many, capped at the kernel's NC, in the last shape), and A is packed once for the
    team, each thread packing the MC x KC blocks it takes first (several
    blocks each way in the first shape, partial ones at the ends; trans_a switches between the
    transposing and the copying pack). Three threads on a two-core machine leave one late, so
    the others take its share. Whichever thread packs a block or computes a column block, every
    variant gives the bits of its one-thread run, call after call."""
    variants = {"portable": [0, 1], "avx2": [0, 2], "avx512": [0, 3, 4]}[isa]
    for m, n, k in [(300, 1500, 600), (130, 2100, 300), (40, 12300, 50)]:
        a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        want = (a.T if trans_a else a).astype(np.float64) @ b
        for v in variants:
            with cpu_threads(1):
                one = ops.sgemm(a, b, trans_a=trans_a, variant=v).numpy()
            assert_close(one, want, what=f"{isa}, {m}x{n}x{k}, variant {v}")
            for threads in (2, 3):
                with cpu_threads(threads):
                    for _ in range(3):
                        r = ops.sgemm(a, b, trans_a=trans_a, variant=v).numpy()
                        assert np.array_equal(r.view(np.uint32), one.view(np.uint32)), (
                            m, n, k, v, threads)


def test_sgemm_c_line_offsets_bits_cpu(rng, isa):
    """C starting anywhere in a cache line (numpy's arrays start 16 bytes into one): the 14x32
    driver then lays its B panels and column blocks from the line before C's first column, the
    first panel narrower (c_panel_skew), and a block leaving less than a panel takes those columns
    too. Every variant gives, at every offset and thread count, the bits of its one-thread run on
    C at a line boundary, and leaves the columns past n alone."""
    variants = {"portable": [0, 1], "avx2": [0, 2], "avx512": [0, 3, 4]}[isa]
    m, k = 45, 70
    for n in (1100, 2085):  # 1024 columns and more: skewed; 2085: a tail of 5 past 65 panels
        ldc = (n + 15) // 16 * 16
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        want = a.astype(np.float64) @ b
        for v in variants:
            one = None
            for line_offset in (0, 4, 5, 15):
                buf = np.full(m * ldc + 32, 7.0, np.float32)
                start = (line_offset - buf.ctypes.data % 64 // 4) % 16
                c = buf[start:start + m * ldc].reshape(m, ldc)
                for threads in (1, 2, 3):
                    with cpu_threads(threads):
                        ops.sgemm(a, b, c, n=n, variant=v)
                    got = c[:, :n].copy()
                    if one is None:
                        one = got
                        assert_close(got, want, what=f"{isa}, n {n}, variant {v}")
                    assert np.array_equal(got.view(np.uint32), one.view(np.uint32)), (
                        n, v, line_offset, threads)
                    assert (c[:, n:] == 7.0).all(), (n, v, line_offset, threads)


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
def test_sgemm_every_path_cpu(rng, isa, trans_a, trans_b):
    """The packing transposes follow the SIMD path (8x8 in registers on avx2, 16x16 on avx512,
    element copies on portable): every variant that path runs, with k tails (k % 8 != 0), panels
    of fewer rows than the tile, and the 2-thread and k-split drivers."""
    variants = {"portable": [0, 1], "avx2": [0, 1, 2], "avx512": [0, 1, 2, 3, 4]}[isa]
    for m, n, k in [(5, 3, 7), (13, 33, 17), (37, 45, 300), (100, 70, 513), (40, 30, 9000)]:
        a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
        want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
        for v in variants:
            got = ops.sgemm(a, b, trans_a=trans_a, trans_b=trans_b, variant=v).numpy()
            assert_close(got, want, what=f"{isa}, {m}x{n}x{k}, variant {v}")


def test_sgemm_bad_arguments(device):
    z = lambda *s, dt=np.float32: convnet.zeros(s, dt, device=device)  # noqa: E731
    with pytest.raises(ValueError, match=r"sgemm: op\(a\) is \(3, 4\) but op\(b\) is \(5, 6\)"):
        ops.sgemm(z(3, 4), z(5, 6))
    with pytest.raises(ValueError, match=r"sgemm: op\(a\) is \(4, 3\) but op\(b\) is \(6, 5\) "
                                         r"\(trans_a=1, trans_b=1\)"):
        ops.sgemm(z(3, 4), z(5, 6), trans_a=True, trans_b=True)
    with pytest.raises(ValueError, match=r"sgemm: c has shape \(2, 6\), too small for the "
                                         r"\(3, 6\) result"):
        ops.sgemm(z(3, 4), z(4, 6), z(2, 6))
    with pytest.raises(ValueError, match=r"sgemm: \(m, n, k\) = \(3, 6, 5\) does not fit a "
                                         r"\(3, 4\) and b \(5, 6\)"):
        ops.sgemm(z(3, 4), z(5, 6), k=5)
    with pytest.raises(TypeError, match=r"sgemm: b must be float32, got int32"):
        ops.sgemm(z(3, 4), z(4, 6, dt=np.int32))
    with pytest.raises(ValueError, match=r"sgemm: a must have 2 dimensions, got shape \(3, 4, 1\)"):
        ops.sgemm(z(3, 4, 1), z(4, 6))
    with pytest.raises(ValueError, match=r"sgemm: variant 99 does not exist"):
        ops.sgemm(z(3, 4), z(4, 6), variant=99)
    with pytest.raises(ValueError, match=r"sgemm: beta != 0 needs an existing c"):
        ops.sgemm(z(3, 4), z(4, 6), beta=1.0)


def test_sgemm_bad_numpy_arguments_cpu():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"sgemm: b: numpy array of shape \(4, 3\) is not "
                                         r"C-contiguous"):
        ops.sgemm(a, np.zeros((3, 4), np.float32).T)
    with pytest.raises(ValueError, match=r"sgemm: output c is read-only"):
        c = np.zeros((3, 3), np.float32)
        c.flags.writeable = False
        ops.sgemm(a, np.zeros((4, 3), np.float32), c)


def test_variants_cover_every_isa_cpu():
    # 0 = dispatch, 1 = portable, 2 = AVX2, 3 and 4 = AVX-512 (14x32 and 6x64 tiles): each either
    # runs or says why it cannot.
    assert ops.sgemm_variant_count("cpu") == 5
    cpu = convnet.device.module_for("cpu")
    a, b = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    for v, isa in [(2, "avx2"), (3, "avx512"), (4, "avx512")]:
        supported = {"portable": 0, "avx2": 1, "avx512": 2}
        if supported[cpu.isa_supported()] >= supported[isa]:
            assert (ops.sgemm(a, b, variant=v).numpy() == 3).all()
        else:
            with pytest.raises(ValueError, match="not supported by this CPU"):
                ops.sgemm(a, b, variant=v)


def test_sgemm_a_in_place_bits_cpu(rng, isa):
    """With few columns (at most 8 B panels) and A's rows contiguous (trans_a: the FC forward's
    w^T), the micro-kernels read A in place instead of packing it; where the k steps are a
    multiple of 4 KB apart (m = 1024, 2048, 3072) the AVX2 kernel packs A instead: under more
    than 4 B panels each block of 48 rows a share per tile during the tiles of the block before
    it, into the other of two buffers (a partial last block; several k blocks; k = 9 shorter
    than the 40 tiles that pack it, so that most pack no step; the second thread's rows
    starting inside a cache line); under fewer in the first tile of each tile row, which writes
    the panel for the others (a partial last tile row too). In
    place, A is read a tile row at a time, each prefetching the next (within a k block and, at
    k = 1100, into the next whole k block). Either way each element of C sums the same products
    in the same order as with A packed from a row-major copy: the same bits, on one thread and
    two, call after call. (The AVX-512 kernels read a row-major A in place too where m > n and
    the columns are few, in deeper k blocks: test_sgemm_a_rows_in_place_cpu. There the packed
    run multiplies by B widened past m columns and keeps the first n.)"""
    variants = {"portable": [0, 1], "avx2": [0, 2], "avx512": [0, 3, 4]}[isa]
    for m, n, k in [(1000, 128, 700), (1024, 100, 300), (45, 1, 9), (31, 130, 257),
                    (1024, 128, 1100), (2048, 80, 9), (3072, 37, 50), (2048, 16, 20)]:
        at = rng.standard_normal((k, m), dtype=np.float32)
        a = np.ascontiguousarray(at.T)
        b = rng.standard_normal((k, n), dtype=np.float32)
        want = a.astype(np.float64) @ b
        wide = b
        if isa == "avx512" and m > n:
            wide = np.concatenate([b, rng.standard_normal((k, m + 64 - n), dtype=np.float32)], 1)
        for v in variants:
            for threads in (1, 2):
                with cpu_threads(threads):
                    packed = ops.sgemm(a, wide, variant=v).numpy()[:, :n]
                    runs = [ops.sgemm(at, b, trans_a=True, variant=v).numpy() for _ in range(2)]
                assert_close(runs[0], want, what=f"{isa}, {m}x{n}x{k}, variant {v}")
                for r in runs:
                    assert np.array_equal(r.view(np.uint32), packed.view(np.uint32)), (
                        m, n, k, v, threads)


def test_sgemm_gathered_b_bits_cpu(rng, isa):
    """A B stored (k, n) is gathered: the first tile of each full panel reads its k steps in
    place and packs them while it computes (sgemm_cpu); the same B stored (n, k) (trans_b) is
    packed by a transposing pass. Both put the same panels before the same kernel: the same
    bits, on 1, 2 and 3 threads, with alpha and beta. Fewer rows than a tile (the panels are then
    copied before the tiles), a partial last panel, several k blocks with a tail, a leading
    dimension past n, the rows split between threads and the columns taken from a counter."""
    variants = {"portable": [0, 1], "avx2": [0, 2], "avx512": [0, 3, 4]}[isa]
    for m, n, k, ldb in [(5, 77, 40, 77), (13, 1000, 301, 1003), (701, 655, 1100, 655),
                         (300, 1500, 600, 1509), (1100, 900, 70, 901)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, ldb), dtype=np.float32)
        bt = np.ascontiguousarray(b[:, :n].T)
        c0 = rng.standard_normal((m, n), dtype=np.float32)
        want = 0.5 * c0.astype(np.float64) + 1.5 * (a.astype(np.float64) @ b[:, :n])
        for v in variants:
            for threads in (1, 2, 3):
                with cpu_threads(threads):
                    gathered, packed = c0.copy(), c0.copy()
                    ops.sgemm(a, b, gathered, alpha=1.5, beta=0.5, n=n, variant=v)
                    ops.sgemm(a, bt, packed, trans_b=True, alpha=1.5, beta=0.5, variant=v)
                assert_close(gathered, want, what=f"{isa}, {m}x{n}x{k}, variant {v}")
                assert np.array_equal(gathered.view(np.uint32), packed.view(np.uint32)), (
                    m, n, k, v, threads)


def test_sgemm_a_rows_in_place_cpu(rng, isa):
    """Where m > n and the columns make at most 8 B panels, or k is at most 128 (the FC weight
    gradient's x, over many panels), the AVX-512 kernels read a row-major A (k contiguous: the
    FC data gradient's w) in place, a tile row at a time, in k blocks sized from n
    (gemm_driver.h, run_rows_a); other paths pack it. Rows 4 KB apart (k = 1024) and not (a
    leading dimension past k), k past a block with a tail, partial tile rows, one column, alpha
    and beta: against float64, and the same bits on 1, 2 and 3 threads (the threads split the
    rows, each in place) and for the first rows alone. (k < 8 max(m, n): not split over k.)"""
    variants = {"portable": [0, 1], "avx2": [0, 2], "avx512": [0, 3, 4]}[isa]
    for m, n, k, lda in [(1001, 128, 1100, 1100), (303, 37, 2100, 2111), (97, 1, 33, 40),
                         (500, 256, 1024, 1024), (300, 96, 700, 701), (1500, 1000, 128, 128),
                         (777, 613, 100, 101)]:
        a = rng.standard_normal((m, lda), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c0 = rng.standard_normal((m, n), dtype=np.float32)
        want = 0.5 * c0.astype(np.float64) + 1.5 * (a[:, :k].astype(np.float64) @ b)
        for v in variants:
            runs = []
            for threads in (1, 2, 3):
                with cpu_threads(threads):
                    c = c0.copy()
                    ops.sgemm(a, b, c, alpha=1.5, beta=0.5, k=k, variant=v)
                    runs.append(c)
            assert_close(runs[0], want, what=f"{isa}, {m}x{n}x{k}, variant {v}")
            for r in runs[1:]:
                assert np.array_equal(r.view(np.uint32), runs[0].view(np.uint32)), (m, n, k, v)
            rows = max(n + 5, k // 8 + 5)  # more rows than columns, and not k-split
            c = c0[:rows].copy()
            ops.sgemm(np.ascontiguousarray(a[:rows]), b, c, alpha=1.5, beta=0.5, k=k, variant=v)
            assert np.array_equal(c.view(np.uint32), runs[0][:rows].view(np.uint32)), (
                m, n, k, v, rows)


def test_sgemm_narrow_last_panel_bits_cpu(rng, isa):
    """A tile of full rows whose B panel holds fewer columns than the kernel's width (the last
    panel of n) computes only the vectors that hold them: 1 to 3 of 6x64's four, one of 14x32's
    two, AVX2's first of two (n = 1000, fc8's weight gradient, computed 1024 columns before).
    Each column sums the same products in the same order either way: the same bits as the first
    n columns of the product with B widened to whole 64-column panels, with alpha and beta, A
    packed or read in place (m > n, k <= 128 at AVX-512), B gathered or transposed, on one
    thread and two. (Variant 0 may pick another AVX-512 tile for the wider n.)"""
    variants = {"portable": [1], "avx2": [2], "avx512": [3, 4]}[isa]
    for n in (133, 136, 148, 168, 191):  # n % 64: 5, 8, 20, 40, 63
        wide_n = (n + 63) // 64 * 64
        for m, k, trans_b in [(300, 100, False), (50, 130, False), (61, 300, True)]:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, wide_n), dtype=np.float32)
            c0 = rng.standard_normal((m, wide_n), dtype=np.float32)
            operand = (lambda x: np.ascontiguousarray(x.T)) if trans_b else np.ascontiguousarray
            want = 0.5 * c0[:, :n].astype(np.float64) + 1.5 * (a.astype(np.float64) @ b[:, :n])
            for v in variants:
                for threads in (1, 2):
                    with cpu_threads(threads):
                        narrow, wide = np.ascontiguousarray(c0[:, :n]), c0.copy()
                        ops.sgemm(a, operand(b[:, :n]), narrow, trans_b=trans_b, alpha=1.5,
                                  beta=0.5, variant=v)
                        ops.sgemm(a, operand(b), wide, trans_b=trans_b, alpha=1.5, beta=0.5,
                                  variant=v)
                    assert_close(narrow, want, what=f"{isa}, {m}x{n}x{k}, variant {v}")
                    assert np.array_equal(narrow.view(np.uint32),
                                          wide[:, :n].view(np.uint32)), (m, n, k, v, threads)


def test_sgemm_copying_pack_edges_cpu(rng, isa):
    """The copying pack (rows contiguous in the source: A with trans_a, B without trans_b) copies
    blocks of 8 k steps panel by panel, loading whole vectors wherever the source row holds
    them and masking only past the last row: every m from 1 to 26 (6-row panels ending at each
    offset into an 8-float vector), k tails of 1, 7 and 9 steps past a block, and more than 8 B
    panels, so A is packed rather than read in place. The same bits as A and B packed from
    their transposes (the transposing pack)."""
    variants = {"portable": [0, 1], "avx2": [0, 2], "avx512": [0, 3, 4]}[isa]
    for k in (1, 15, 17):
        for m in range(1, 27):
            n = 130 + m % 3
            at = rng.standard_normal((k, m), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            a, bt = np.ascontiguousarray(at.T), np.ascontiguousarray(b.T)
            want = a.astype(np.float64) @ b
            for v in variants:
                got = ops.sgemm(at, b, trans_a=True, variant=v).numpy()
                assert_close(got, want, what=f"{isa}, {m}x{n}x{k}, variant {v}")
                transposed = ops.sgemm(a, bt, trans_b=True, variant=v).numpy()
                assert np.array_equal(got.view(np.uint32), transposed.view(np.uint32)), (m, k, v)


def test_sgemm_avx512_tile_choice_cpu(rng):
    """On AVX-512, variant 0 keeps the 6x64 tile while m fits one of its A blocks (384 rows: the
    convolutions' filters) and takes 14x32 past it (square 512^3). The two tiles sum k in
    different blocks (128 and 256-512 steps), so their bits differ and name the tile run."""
    with cpu_isa("avx512"):
        for m, tile in [(384, 4), (385, 3), (512, 3)]:
            a = rng.standard_normal((m, 512), dtype=np.float32)
            b = rng.standard_normal((512, 512), dtype=np.float32)
            bits = {v: ops.sgemm(a, b, variant=v).numpy().view(np.uint32) for v in (0, 3, 4)}
            assert_close(bits[0].view(np.float32), a.astype(np.float64) @ b, what=f"m = {m}")
            assert not np.array_equal(bits[3], bits[4]), m
            assert np.array_equal(bits[0], bits[tile]), (m, tile)


# m x n x k, small, then large enough for 2 MB packed blocks, small again, then larger still.
_GROWTH_SHAPES = [(300, 600, 200), (300, 3000, 2000), (300, 600, 200), (700, 2100, 600)]


def _growth_runs():
    """Yields (key, m x n x k, a, b, threads, variant) for the growth sequence, seed 7."""
    rng = np.random.default_rng(7)
    for i, (m, n, k) in enumerate(_GROWTH_SHAPES):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        for v in (3, 4):
            for threads in (1, 2):
                yield f"{i}_{v}_{threads}", (m, n, k), a, b, threads, v


_GROWTH_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from isa_paths import cpu_threads
from test_gemm import _growth_runs
from convnet import ops
out = {}
for key, _, a, b, threads, v in _growth_runs():
    with cpu_threads(threads):
        out[key] = ops.sgemm(a, b, variant=v).numpy()
np.savez(sys.argv[1], **out)
"""


def test_sgemm_packed_buffers_growing_cpu(tmp_path):
    """The driver's packed blocks grow with the problem and switch to 2 MB-aligned huge-page
    buffers from 2 MB up (AlignedScratch): a fresh process growing them from small (6x64's
    256 KB B block) to huge (its kept A, the team's A blocks) gives the float64 answer and the
    bits of this process, whose buffers are already grown, at one and two threads."""
    import os
    import subprocess
    import sys
    cpu = convnet.device.module_for("cpu")
    if cpu.isa_supported() != "avx512":
        pytest.skip("variants 3 and 4 need AVX-512")
    path = tmp_path / "growth.npz"
    subprocess.run([sys.executable, "-c", _GROWTH_SCRIPT, str(path),
                    os.path.dirname(os.path.abspath(__file__))], check=True)
    fresh = np.load(path)
    for key, (m, n, k), a, b, threads, v in _growth_runs():
        with cpu_threads(threads):
            got = ops.sgemm(a, b, variant=v).numpy()
        what = f"{m}x{n}x{k} variant {v}, {threads} threads"
        assert_close(got, a.astype(np.float64) @ b, what=what)
        assert np.array_equal(got.view(np.uint32), fresh[key].view(np.uint32)), what
