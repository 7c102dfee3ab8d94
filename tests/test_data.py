import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from convnet import rng
from convnet.data import BadImageError, DataError, WorkerError, open_source
from convnet.data import augment, cifar, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = "synthetic:size=20,train=300,test=40,classes=10"


def collect(it):
    return [(x.copy(), y.copy()) for x, y in it]


def shm_names():
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}
    except FileNotFoundError:
        return set()


# ---------------------------------------------------------------- synthetic + augmentation

def test_synthetic_deterministic_and_balanced():
    a = open_source("synthetic:size=24,train=100,test=20", workers=0)
    b = open_source("synthetic:size=24,train=100,test=20", workers=0)
    for split in (0, 1):
        for i in (0, 7, a.source.count(split) - 1):
            assert np.array_equal(a.source.load(split, i), b.source.load(split, i))
    assert a.num_classes == 10 and a.image_shape == (3, 24, 24)
    assert np.bincount(a.source.labels(0)).tolist() == [10] * 10
    c = open_source("synthetic:size=24,train=100,test=20,seed=1", workers=0)
    assert not np.array_equal(a.source.load(0, 0), c.source.load(0, 0))
    with pytest.raises(DataError, match="unknown synthetic option"):
        open_source("synthetic:sise=3")


def test_default_synthetic_shape():
    ds = open_source(None)
    assert ds.num_train == 10000 and ds.num_test == 2000 and ds.image_shape == (3, 32, 32)
    assert ds.workers == 0
    x, y = next(iter(ds.train_batches(0, 128)))
    assert x.shape == (3, 32, 32, 128) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.dtype == np.int32 and y.shape == (128,)


def test_epoch_order():
    o0 = augment.epoch_order(1000, 5, 0)
    assert sorted(o0.tolist()) == list(range(1000))
    assert np.array_equal(o0, augment.epoch_order(1000, 5, 0))
    assert not np.array_equal(o0, augment.epoch_order(1000, 5, 1))
    assert not np.array_equal(o0, augment.epoch_order(1000, 6, 0))


def test_train_batches_match_reference():
    ds = open_source(SMALL, crop=16, workers=0, color_noise=0.1)
    src = ds.source
    order = augment.epoch_order(ds.num_train, 3, 2)
    seen = 0
    for x, y in ds.train_batches(2, 64, seed=3):
        idx = order[seen:seen + x.shape[3]]
        ys, xs, fl, sh = augment.train_params(idx, 3, 2, src.size, 16, True, 0.1, src.eigvals, src.eigvecs)
        for j, i in enumerate(idx):
            ref = augment.reference_column(src.load(0, i), ys[j], xs[j], fl[j], 16, src.mean, sh[j])
            np.testing.assert_allclose(x[..., j], ref, rtol=0, atol=1e-3)
            assert y[j] == src.labels(0)[i]
        seen += x.shape[3]
    assert seen == 256  # drop_last: 300 -> 4 full batches of 64
    # the draws cover all offsets and both flips, and colour noise has the paper's scale
    ys, xs, fl, sh = augment.train_params(np.arange(2000), 0, 0, (20, 20), 16, True, 0.1, src.eigvals, src.eigvecs)
    assert set(ys.tolist()) == set(range(5)) and set(xs.tolist()) == set(range(5))
    assert 0.45 < fl.mean() < 0.55
    alpha = np.linalg.solve(np.diag(src.eigvals) * 255.0, (sh @ src.eigvecs).T)
    assert abs(alpha.std() - 0.1) < 0.01


def test_train_batches_start_mid_epoch():
    ds = open_source(SMALL, crop=16, workers=0)
    full = collect(ds.train_batches(1, 64, seed=5))
    tail = collect(ds.train_batches(1, 64, seed=5, start=2))
    assert len(full) == 4 and len(tail) == 2
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(full[2:], tail))
    assert collect(ds.train_batches(1, 64, seed=5, start=4)) == []
    with pytest.raises(ValueError, match="start batch 5 is outside the epoch's 4 batches"):
        ds.train_batches(1, 64, seed=5, start=5)


def test_no_augmentation_options():
    ds = open_source(SMALL, crop=20, workers=0, flip=False, color_noise=0)
    x, _ = next(iter(ds.train_batches(0, 8)))
    i = augment.epoch_order(ds.num_train, 0, 0)[0]
    ref = augment.reference_column(ds.source.load(0, i), 0, 0, False, 20, ds.source.mean)
    np.testing.assert_allclose(x[..., 0], ref, atol=1e-4)


def test_test_and_multiview_order():
    ds = open_source(SMALL, crop=16, workers=0)
    src = ds.source
    batches = collect(ds.test_batches(16))
    assert [b[0].shape[3] for b in batches] == [16, 16, 8]  # last batch kept, shorter
    assert len(collect(ds.test_batches(16, drop_last=True))) == 2
    x, y = batches[0]
    for j in range(16):
        ref = augment.reference_column(src.load(1, j), 2, 2, False, 16, src.mean)
        np.testing.assert_allclose(x[..., j], ref, atol=1e-4)
    x, y = next(iter(ds.test_batches(4, multiview=True)))
    assert x.shape == (3, 16, 16, 40)
    offs = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    for v in range(10):
        oy, ox = offs[v % 5]
        for j in range(4):
            ref = augment.reference_column(src.load(1, j), oy, ox, v >= 5, 16, src.mean)
            np.testing.assert_allclose(x[..., v * 4 + j], ref, atol=1e-4)
            assert y[v * 4 + j] == src.labels(1)[j]


def test_workers_give_identical_batches_and_no_leak():
    before = shm_names()
    ref_ds = open_source(SMALL, crop=16, workers=0)
    with open_source(SMALL, crop=16, workers=2, prefetch=3) as ds:
        for e in (0, 1):
            a = collect(ref_ds.train_batches(e, 50, seed=9))
            b = collect(ds.train_batches(e, 50, seed=9))
            assert len(a) == len(b) == 6
            for (xa, ya), (xb, yb) in zip(a, b):
                assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        for mv in (False, True):
            a = collect(ref_ds.test_batches(16, multiview=mv))
            b = collect(ds.test_batches(16, multiview=mv))
            assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
        # two iterators interleaved (a test pass in the middle of an epoch), then an early break
        it = ds.train_batches(0, 50)
        next(it)
        assert len(collect(ds.test_batches(20))) == 2
        assert len(collect(it)) == 5
        for k, _ in enumerate(ds.train_batches(1, 10)):
            if k == 2:
                break
    import gc
    gc.collect()
    assert shm_names() - before == set()


def test_dead_worker_is_a_clear_error():
    ds = open_source(SMALL, crop=16, workers=2)
    it = ds.train_batches(0, 10)  # 30 batches, 4 in flight
    next(it)
    proc = ds._pool.procs[1]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)  # dead for sure; worker 0 may already have made every remaining batch
    t = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 1 .*died .*SIGKILL"):
        next(it)
    assert time.monotonic() - t < 1
    with pytest.raises(WorkerError):
        ds.train_batches(1, 10)
    ds.close()


# ---------------------------------------------------------------- CIFAR

def _cifar_batch(n, rs, key="labels", protocol=2):
    data = rs.randint(0, 256, (n, 3072)).astype(np.uint8)
    labels = rs.randint(0, 10, n).tolist()
    return {"batch_label": "x", key: labels, "data": data, "filenames": ["a"] * n}, protocol


def test_cifar10_and_100(tmp_path):
    rs = np.random.RandomState(0)
    d10 = tmp_path / "c10"
    d10.mkdir()
    batches = []
    for k in range(1, 3):
        b, p = _cifar_batch(20, rs, protocol=2 if k == 1 else 5)
        batches.append(b)
        (d10 / f"data_batch_{k}").write_bytes(pickle.dumps(b, protocol=p))
    (d10 / "test_batch").write_bytes(pickle.dumps(_cifar_batch(10, rs)[0], protocol=2))
    names = [f"c{i}" for i in range(10)]
    (d10 / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2))
    ds = open_source(str(d10), workers=0)
    assert ds.source.kind == "cifar" and ds.class_names == names and ds.num_train == 40 and ds.num_test == 10
    img = ds.source.load(0, 21)
    row = batches[1]["data"][1]
    assert np.array_equal(img[..., 0].ravel(), row[:1024]) and np.array_equal(img[..., 2].ravel(), row[2048:])
    assert ds.source.labels(0)[21] == batches[1]["labels"][1]
    x, y = next(iter(ds.test_batches(10)))
    assert x.shape == (3, 32, 32, 10)

    d100 = tmp_path / "c100"
    d100.mkdir()
    for f, n in (("train", 30), ("test", 5)):
        b, _ = _cifar_batch(n, rs, key="fine_labels")
        b["coarse_labels"] = [0] * n
        (d100 / f).write_bytes(pickle.dumps(b, protocol=4))
    (d100 / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["a"]}))
    ds = open_source(f"cifar:{d100}", crop=24, workers=0)
    assert ds.num_train == 30 and ds.image_shape == (3, 24, 24)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_malicious_pickle_refused(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"]}, protocol=2))
    (d / "data_batch_1").write_bytes(pickle.dumps({"data": _Evil(), "labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: refusing to unpickle global (posix|os)\.system"):
        open_source(str(d))
    (d / "data_batch_1").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="data_batch_1"):
        cifar.load_cifar(str(d))


# ---------------------------------------------------------------- image folders

def _write_images(d, n, rs, fmt="JPEG", ext=".JPEG", size=(40, 30)):
    d.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        arr = rs.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8)
        Image.fromarray(arr).save(d / f"img{k}{ext}", fmt)


@pytest.fixture
def folder(tmp_path):
    rs = np.random.RandomState(1)
    root = tmp_path / "imnet"
    _write_images(root / "train" / "n001", 4, rs)
    _write_images(root / "train" / "n002", 3, rs, "PNG", ".png", size=(30, 50))
    (root / "train" / "n002" / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good = (root / "train" / "n001" / "img0.JPEG").read_bytes()
    (root / "train" / "n001" / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (root / "train" / "n001" / "notes.txt").write_text("ignored")
    _write_images(root / "val" / "n001", 2, rs)
    _write_images(root / "val" / "n002", 1, rs)
    (root / "synset_words.txt").write_text("n001 tench, Tinca tinca\nn002 goldfish\n")
    return root


def test_folder_source_skips_bad_images(folder):
    ds = open_source(str(folder), workers=0)
    assert ds.source.kind == "folder" and ds.class_ids == ["n001", "n002"]
    assert ds.class_names == ["tench, Tinca tinca", "goldfish"]
    assert ds.num_train == 9 and ds.num_test == 3 and ds.image_shape == (3, 224, 224)
    it = ds.train_batches(0, 9, drop_last=False)
    (x, y), = collect(it)
    assert x.shape == (3, 224, 224, 7)
    assert sorted(os.path.basename(p) for p, _ in it.skipped) == ["corrupt.JPEG", "truncated.JPEG"]
    assert "2 unreadable image(s) skipped" in it.summary() and "truncated.JPEG" in it.summary()
    strict = open_source(str(folder), workers=0, on_error="raise")
    with pytest.raises(BadImageError, match="(corrupt|truncated).JPEG"):
        collect(strict.train_batches(0, 9))


def test_folder_windows_are_crops_of_the_full_resize(folder, tmp_path):
    from convnet.data import images
    rs = np.random.RandomState(3)
    _write_images(tmp_path / "big", 1, rs, size=(500, 375))
    paths = [str(tmp_path / "big" / "img0.JPEG"), str(folder / "train" / "n001" / "img1.JPEG"),
             str(folder / "train" / "n002" / "img0.png")]
    for p in paths:
        full = images.load_resized(p, 256)
        for y, x, c in [(0, 0, 224), (32, 32, 224), (5, 17, 224), (13, 2, 101), (0, 0, 256)]:
            assert np.array_equal(images.load_resized(p, 256, (y, x, c)), full[y:y + c, x:x + c])
    # the pipeline, which loads windows, against the reference on full images
    ds = open_source(str(folder), workers=0)
    (x, y), = collect(ds.test_batches(3))
    for j in range(3):
        img = images.load_resized(ds.source.key(1, j), 256)
        ref = augment.reference_column(img, 16, 16, False, 224, ds.source.mean)
        np.testing.assert_allclose(x[..., j], ref, rtol=0, atol=1e-4)


def test_folder_workers_match_and_fail_fast(folder):
    a = collect(open_source(str(folder), workers=0).train_batches(1, 4, seed=2, drop_last=False))
    with open_source(str(folder), workers=2) as ds:
        it = ds.train_batches(1, 4, seed=2, drop_last=False)
        b = collect(it)
        assert len(it.skipped) == 2
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    with open_source(str(folder), workers=1, on_error="raise") as ds:
        with pytest.raises(BadImageError):
            collect(ds.train_batches(0, 9))


def test_folder_errors(tmp_path, folder):
    (folder / "train" / "n003").mkdir()
    with pytest.raises(DataError, match="empty class folder: .*n003"):
        open_source(str(folder))
    empty = tmp_path / "nothing"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        open_source(str(empty))
    with pytest.raises(DataError, match="not found"):
        open_source(str(tmp_path / "missing"))


def test_flat_validation_with_labels_file(tmp_path):
    rs = np.random.RandomState(2)
    root = tmp_path / "flat"
    _write_images(root / "train" / "a", 2, rs)
    _write_images(root / "train" / "b", 2, rs)
    _write_images(root / "val", 3, rs)
    with pytest.raises(DataError, match="no labels file"):
        open_source(str(root))
    (root / "val_labels.txt").write_text("img0.JPEG b\nimg1.JPEG a\nimg2.JPEG 1\n")
    ds = open_source(str(root), workers=0)
    assert ds.source.labels(1).tolist() == [1, 0, 1]


# ---------------------------------------------------------------- make_data and shards

def _run_make_data(*args):
    return subprocess.run([sys.executable, "-m", "convnet.make_data", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_make_data_resume_and_shards(folder, tmp_path):
    full = tmp_path / "full"
    r = _run_make_data(str(folder), str(full), "--shard-size", "3", "--size", "32", "--workers", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    meta = json.loads((full / "meta.json").read_text())
    assert meta["splits"]["train"]["count"] == 7 and meta["splits"]["test"]["count"] == 3
    assert len(meta["skipped"]) == 2

    part = tmp_path / "part"
    r = _run_make_data(str(folder), str(part), "--shard-size", "3", "--size", "32", "--workers", "0",
                       "--quiet", "--stop-after-shards", "2")
    assert r.returncode == 3 and not (part / "meta.json").exists()
    with pytest.raises(DataError, match="did not finish"):
        open_source(str(part))
    (part / "train-00002.u8.tmp").write_bytes(b"garbage from a killed run")
    done = {n: os.stat(part / n).st_mtime_ns for n in ("train-00000.u8", "train-00001.u8")}
    r = _run_make_data(str(folder), str(part), "--shard-size", "3", "--size", "32", "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert {n: os.stat(part / n).st_mtime_ns for n in done} == done  # not redone
    assert not [n for n in os.listdir(part) if n.endswith(".tmp") or n.startswith("progress")]
    for name in sorted(os.listdir(full)):
        if name.endswith((".u8", ".labels", ".npy")):
            assert (full / name).read_bytes() == (part / name).read_bytes(), name
    r = _run_make_data(str(folder), str(part), "--shard-size", "3", "--size", "32", "--quiet")
    assert r.returncode == 0 and "already complete" in r.stdout

    ds = open_source(str(full), workers=0)
    assert ds.source.kind == "shards" and ds.image_shape == (3, 32, 32) and ds.num_train == 7
    folder_ds = open_source(str(folder), workers=0)
    # same decoding path as the folder source, at 32
    from convnet.data import images
    paths = [p for p in folder_ds.source._paths[0] if "corrupt" not in p and "truncated" not in p]
    assert np.array_equal(ds.source.load(0, 0), images.load_resized(paths[0], 32))
    m = np.mean([ds.source.load(0, i).astype(np.float64) for i in range(7)], axis=0)
    np.testing.assert_allclose(ds.source.mean, m, atol=1e-3)
    x, y = next(iter(ds.train_batches(0, 4, seed=1)))
    assert x.shape == (3, 32, 32, 4)
    ds24 = open_source(f"shards:{full}", crop=24, workers=2)
    a = collect(ds24.train_batches(0, 3, drop_last=False))
    b = collect(open_source(f"shards:{full}", crop=24, workers=0).train_batches(0, 3, drop_last=False))
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b))
    ds24.close()


def test_make_data_cli_errors(tmp_path):
    r = _run_make_data(str(tmp_path / "nope"), str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.startswith("convnet.make_data: error:") and "Traceback" not in r.stderr
    r = _run_make_data("--help")
    assert r.returncode == 0 and "--shard-size" in r.stdout
