"""Data pipeline throughput per worker (one process, one thread unless stated), against the targets
(>= 500 JPEG images/s per core, >= 5000 images/s from shards) and peers measured in the same run.

    python benchmarks/bench_data.py [--images 400] [--shard-images 2048] [--batch 128] [--repeats 5]

Makes ~110 KB 500x375 JPEGs in a temporary directory, packs --shard-images of them (the JPEGs
repeated) with make_data, so that a shard pass has enough batches to amortise the start of an
iterator (shared-memory slots are new per iterator; workers fault their pages in), and reports the
median over --repeats passes of images/s by the wall clock and per CPU-second of this process
(the fairer "per core" figure on a shared machine; rows with worker processes have no CPU column).
Rows: Pillow's bare decode (the JPEG peer); libjpeg-turbo's bare decode through simplejpeg (what the
pipeline decodes with: the floor of its cost); decode + resize to 256 (images.load_resized); the
resize of a training window alone, C++ against Pillow; the
JPEG folder source to a (3, 224, 224, N) float32 batch (crop, flip, PCA
colour noise, mean subtraction) with the C++ assembly and with the numpy assembly it replaced;
the shard source likewise (the numpy rows are the previous implementation's assembly; the JPEG
rows both resize only the crop window), plus 2 assembly threads in one process, 2 worker
processes, and the raw shard read (memmap + crop + flip, uint8). Timings on shared machines vary
by 20-40% between runs: compare ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import simplejpeg
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convnet.data import augment, images, open_source  # noqa: E402
from convnet.device import module_for  # noqa: E402
from convnet.make_data import make_data  # noqa: E402

JPEG_TARGET, SHARD_TARGET = 500.0, 5000.0


def make_jpegs(root, n, classes=4):
    """Smooth random images with some texture: ~110 KB at quality 90, like ImageNet photos."""
    rs = np.random.RandomState(0)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    sizes = []
    for k in range(n):
        d = os.path.join(root, "train", f"c{k % classes}")
        os.makedirs(d, exist_ok=True)
        base = np.stack([np.sin(xx / rs.uniform(8, 40) + rs.uniform(0, 6)) * np.cos(yy / rs.uniform(8, 40))
                         for _ in range(3)], -1) * 80 + 128
        img = np.clip(base + rs.normal(0, 22, base.shape), 0, 255).astype(np.uint8)
        p = os.path.join(d, f"img{k}.JPEG")
        Image.fromarray(img).save(p, "JPEG", quality=90)
        sizes.append(os.path.getsize(p))
    return float(np.mean(sizes))


def rates(fn, n, repeats):
    """(median images/s by wall clock, median images per CPU-second of this process)."""
    fn()  # warm-up: page cache, buffers, worker start
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return n / statistics.median(wall), n / max(statistics.median(cpu), 1e-9)


def drain(ds, batch):
    return lambda: [None for _ in ds.train_batches(0, batch)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--shard-images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    cpu = module_for("cpu")
    threads_before = cpu.num_threads()
    rows = []

    def row(name, r, target=None, peer=None, cpu_col=True):
        rows.append((name, r, target, peer, cpu_col))

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "jpeg"), os.path.join(tmp, "shards")
        kb = make_jpegs(src, a.images) / 1024
        n_f = (a.images // a.batch) * a.batch
        print(f"{a.images} JPEGs 500x375, mean {kb:.0f} KB; batch {a.batch}, crop 224; median of "
              f"{a.repeats} passes; assembly variant {cpu.assemble_batch_variants()} available, "
              f"isa {cpu.isa()} (shared machine: numbers are noisy)")
        paths = [os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs]

        def bare_decode():
            for p in paths:
                with Image.open(p) as im:
                    im.load()

        blobs = []
        for p in paths:
            with open(p, "rb") as f:
                blobs.append(f.read())

        def turbo_decode():
            for b in blobs:
                simplejpeg.decode_jpeg(b, "RGB")

        def decode_resize():
            for p in paths:
                images.load_resized(p, 256)

        cpu.set_num_threads(1)
        r_dec = rates(bare_decode, len(paths), a.repeats)
        row("peer: Pillow decode only", r_dec)
        row("libjpeg-turbo decode only (simplejpeg)", rates(turbo_decode, len(paths), a.repeats),
            peer=r_dec)
        row("JPEG decode + resize 256 (load_resized)", rates(decode_resize, len(paths), a.repeats),
            peer=r_dec)
        # The resize alone: a training window (224 of 256) of each decoded image, C++ vs Pillow.
        decoded = [images.decode(p, 256) for p in paths[:32]]
        boxes = []
        for img in decoded:
            h, w = img.shape[:2]
            s, k = min(h, w), min(h, w) / 256
            x0, y0 = (w - s) / 2 + 13 * k, (h - s) / 2 + 17 * k
            boxes.append((x0, y0, x0 + 224 * k, y0 + 224 * k))
        win = np.empty((224, 224, 3), np.uint8)

        def resize_cpp():
            for img, box in zip(decoded, boxes):
                images.resize_bilinear(img, win, box)

        pil = [Image.fromarray(img) for img in decoded]

        def resize_pillow():
            for im, box in zip(pil, boxes):
                im.resize((224, 224), Image.BILINEAR, box=box)

        r_pil = rates(resize_pillow, len(decoded), a.repeats)
        row("peer: Pillow resize of a 224 training window", r_pil)
        row("C++ resize_bilinear of the same window", rates(resize_cpp, len(decoded), a.repeats),
            peer=r_pil)
        folder = open_source(src, workers=0, stats_samples=64)
        r_jpeg = rates(drain(folder, a.batch), n_f, a.repeats)
        row("JPEG -> float32 batch, C++ assembly", r_jpeg, JPEG_TARGET, r_dec)
        folder.assembler.impl = "numpy"
        row("JPEG -> float32 batch, numpy assembly", rates(drain(folder, a.batch), n_f, a.repeats),
            JPEG_TARGET, r_dec)

        many = os.path.join(tmp, "many")
        for k in range(a.shard_images):
            d = os.path.join(many, "train", f"c{k % 4}")
            os.makedirs(d, exist_ok=True)
            os.symlink(paths[k % len(paths)], os.path.join(d, f"img{k}.JPEG"))
        make_data(many, dst, shard_size=512, workers=2, progress=False, log=lambda *x: None)
        n_s = (a.shard_images // a.batch) * a.batch
        shards = open_source(dst, workers=0)
        r_shard = rates(drain(shards, a.batch), n_s, a.repeats)
        row("shards -> float32 batch, C++ assembly", r_shard, SHARD_TARGET)
        shards.assembler.impl = "numpy"
        row("shards -> float32 batch, numpy assembly", rates(drain(shards, a.batch), n_s, a.repeats),
            SHARD_TARGET, r_shard)
        shards.assembler.impl = "kernel"
        cpu.set_num_threads(2)
        row("shards -> float32 batch, C++, 2 threads", rates(drain(shards, a.batch), n_s, a.repeats),
            SHARD_TARGET, r_shard)
        cpu.set_num_threads(1)
        with open_source(dst, workers=2) as two:
            row("shards -> float32 batch, C++, 2 workers", rates(drain(two, a.batch), n_s, a.repeats),
                SHARD_TARGET, r_shard, cpu_col=False)

        src_obj = shards.source
        order = augment.epoch_order(src_obj.count(0), 0, 0)
        ys, xs, fl, _ = augment.train_params(order, 0, 0, src_obj.size, 224, True, 0, src_obj.eigvals,
                                             src_obj.eigvecs)
        buf = np.empty((a.batch, 224, 224, 3), np.uint8)

        def raw():
            for k, i in enumerate(order):
                w = src_obj.load(0, int(i))[ys[k]:ys[k] + 224, xs[k]:xs[k] + 224]
                buf[k % a.batch] = w[:, ::-1] if fl[k] else w
        row("shards raw read+crop+flip (uint8, numpy)", rates(raw, len(order), a.repeats), SHARD_TARGET, r_shard)
    cpu.set_num_threads(threads_before)

    print(f"{'path':48s} {'img/s':>7s} {'img/cpu-s':>9s} {'target':>7s} {'cpu/tgt':>7s} {'vs peer':>8s}")
    for name, (wall, per_cpu), target, peer, cpu_col in rows:
        c = f"{per_cpu:9.0f}" if cpu_col else f"{'-':>9s}"
        t = f"{target:7.0f} {(per_cpu if cpu_col else wall) / target:7.2f}" if target else f"{'':7s} {'':7s}"
        p = f"{wall / peer[0]:8.2f}" if peer else ""
        print(f"{name:48s} {wall:7.0f} {c} {t} {p}")
    print("cpu/tgt: images per CPU-second (wall clock for the 2-worker row) over the target; "
          "vs peer: wall-clock rate over the first row of its group (Pillow decode; Pillow resize; C++ "
          "shards).")


if __name__ == "__main__":
    main()
