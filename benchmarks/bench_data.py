"""Data pipeline throughput: JPEG decode + augment per worker, shards, against the targets.

    python benchmarks/bench_data.py [--images 400] [--batch 128] [--repeats 3]

Makes ~110 KB 500x375 JPEGs in a temporary directory, packs them with make_data, and reports
images/s (median of --repeats passes) for: the JPEG folder source in one process (decode,
resize 256, crop 224, flip, PCA noise, mean subtraction, (3, 224, 224, N) float32 batch), the
shard source likewise, and the raw shard read (memmap + crop + flip, uint8).  Timings on shared
machines vary by 20-40% between runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convnet.data import augment, open_source  # noqa: E402
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


def rate(fn, n, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return n / statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "jpeg"), os.path.join(tmp, "shards")
        kb = make_jpegs(src, a.images) / 1024
        print(f"{a.images} JPEGs 500x375, mean {kb:.0f} KB; batch {a.batch}, crop 224; "
              f"median of {a.repeats} passes (shared machine: numbers are noisy)")

        paths = [os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs]

        def bare_decode():  # the peer: Pillow decode alone, same files, same run
            for p in paths:
                with Image.open(p) as im:
                    im.load()
        r_peer = rate(bare_decode, len(paths), a.repeats)

        folder = open_source(src, workers=0, stats_samples=64)
        n_f = (a.images // a.batch) * a.batch
        r_jpeg = rate(lambda: [None for _ in folder.train_batches(0, a.batch)], n_f, a.repeats)

        make_data(src, dst, shard_size=256, workers=0, progress=False, log=lambda *x: None)
        shards = open_source(dst, workers=0)
        r_shard = rate(lambda: [None for _ in shards.train_batches(0, a.batch)], n_f, a.repeats)

        src_obj = shards.source
        order = augment.epoch_order(src_obj.count(0), 0, 0)
        ys, xs, fl, _ = augment.train_params(order, 0, 0, src_obj.size, 224, True, 0, src_obj.eigvals, src_obj.eigvecs)
        buf = np.empty((a.batch, 224, 224, 3), np.uint8)

        def raw():
            for k, i in enumerate(order):
                w = src_obj.load(0, int(i))[ys[k]:ys[k] + 224, xs[k]:xs[k] + 224]
                buf[k % a.batch] = w[:, ::-1] if fl[k] else w
        r_raw = rate(raw, len(order), a.repeats)

        print(f"{'path':48s} {'images/s':>10s} {'target':>8s} {'ratio':>7s}")
        print(f"{'JPEG decode+resize+augment, 1 process':48s} {r_jpeg:10.0f} {JPEG_TARGET:8.0f} {r_jpeg / JPEG_TARGET:7.2f}")
        print(f"{'  peer: Pillow decode only, 1 process':48s} {r_peer:10.0f} {'':8s} {r_jpeg / r_peer:7.2f} (ours/peer)")
        print(f"{'shards -> float32 batch, 1 process':48s} {r_shard:10.0f} {SHARD_TARGET:8.0f} {r_shard / SHARD_TARGET:7.2f}")
        print(f"{'shards raw read+crop+flip (uint8), 1 process':48s} {r_raw:10.0f} {SHARD_TARGET:8.0f} {r_raw / SHARD_TARGET:7.2f}")


if __name__ == "__main__":
    main()
