"""Data parallelism over MPI ranks on one machine: 1 rank against K ranks, one core each.

    python benchmarks/bench_scaling.py [CONFIG] [--ranks 2] [--batch 64] [--size 128]
                                       [--steps 4] [--rounds 3] [--json FILE]

Weak scaling, as data parallelism is used: every rank trains on --batch images per step (the
global batch is K x batch). Each round runs the 1-rank job, then the K-rank job (mpiexec of the
environment, each rank bound to one core, OMP_NUM_THREADS=1), one warm-up step and --steps timed
steps each; the machine may be shared, so the figures are medians over the rounds, with the
same-round ratio. Reported per run: images/s (global), step time, scaling efficiency
(K-rank images/s / (K x 1-rank images/s)), the allreduce per step — bytes, buckets, seconds from
the first bucket's start to the last's end, seconds the update still had to wait for it after
the backward pass ("exposed") — and the overlap achieved: 1 - exposed / allreduce.

Needs mpi4py and an mpiexec (pip install -e ".[mpi]"); without them it says so and measures
nothing.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]  # benchmarks/ and the source tree (in-place builds)

from _common import cpu_model  # noqa: E402

CONFIG = os.path.join(ROOT, "layers", "alexnet.cfg")
_CHILD = "CONVNET_BENCH_SCALING_CHILD"


def child(args):
    """One rank of a job (or the single process): times the steps, rank 0 prints one JSON."""
    from convnet import distributed
    from convnet.config import load_config
    from convnet.net import Net
    world = distributed.from_environment(600.0)
    ranks, rank = (world.size, world.rank) if world else (1, 0)
    net = Net(load_config(args.config), image_shape=(3, args.size, args.size),
              batch_size=args.batch, seed=1)
    dnet = distributed.DistributedNet(net, world) if world else net
    rng = np.random.default_rng(0)
    n = args.batch * ranks
    x = (rng.standard_normal((3, args.size, args.size, n)) * 50).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int32)
    if not world:
        x, y = x[..., :args.batch], y[:args.batch]
    steps, comm = [], []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        dnet.train_step(x, y, step=i, epoch=0, progress=0.0)
        if i:  # the first is a warm-up
            steps.append(time.perf_counter() - t0)
            comm.append(dnet.sync.last if world else {})
    if rank == 0:
        med = statistics.median(steps)
        row = {"ranks": ranks, "step_s": med, "images_per_s": n / med,
               "params": net.total_params}
        if world:
            for key in ("allreduce_s", "exposed_s"):
                row[key] = statistics.median(c[key] for c in comm)
            row["bytes"], row["buckets"] = comm[0]["bytes"], comm[0]["buckets"]
            row["overlap"] = 1.0 - row["exposed_s"] / max(row["allreduce_s"], 1e-12)
        print(json.dumps(row), flush=True)


def launch(args, ranks, mpiexec):
    env = dict(os.environ, OMP_NUM_THREADS="1", **{_CHILD: "1"})
    cmd = [sys.executable, os.path.abspath(__file__), args.config, "--batch", str(args.batch),
           "--size", str(args.size), "--steps", str(args.steps)]
    if ranks > 1:
        cmd = [mpiexec, "-n", str(ranks), "-bind-to", "core"] + cmd
    else:
        cmd = ["taskset", "-c", "0"] + cmd if shutil.which("taskset") else cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=CONFIG)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="images per rank per step")
    ap.add_argument("--size", type=int, default=128, help="image side")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if os.environ.get(_CHILD):
        return child(args)
    mpiexec = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                            os.environ.get("PATH", "")]))
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    if mpiexec is None:
        print("no MPI (pip install -e '.[mpi]'): scaling not measured")
        return
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; one core per rank")
    print(f"{os.path.relpath(args.config, ROOT)}: {args.batch} images of {args.size}x"
          f"{args.size} per rank per step, {args.steps} timed steps, {args.rounds} rounds")
    rows = []
    for r in range(args.rounds):
        one, many = launch(args, 1, mpiexec), launch(args, args.ranks, mpiexec)
        many["efficiency"] = many["images_per_s"] / (args.ranks * one["images_per_s"])
        rows.append({"round": r, "one": one, "many": many})
        print(f"round {r}: 1 rank {one['images_per_s']:.1f} img/s ({one['step_s']:.2f} s/step);"
              f" {args.ranks} ranks {many['images_per_s']:.1f} img/s "
              f"({many['step_s']:.2f} s/step), efficiency {many['efficiency']:.2f}; "
              f"allreduce {many['bytes'] / 1e6:.1f} MB in {many['buckets']} buckets, "
              f"{many['allreduce_s'] * 1e3:.0f} ms, exposed {many['exposed_s'] * 1e3:.0f} ms, "
              f"overlap {many['overlap']:.0%}")

    def med(side, key):
        return statistics.median(r[side][key] for r in rows)

    print(f"median: 1 rank {med('one', 'images_per_s'):.1f} img/s, {args.ranks} ranks "
          f"{med('many', 'images_per_s'):.1f} img/s, efficiency {med('many', 'efficiency'):.2f}"
          f" (range {min(r['many']['efficiency'] for r in rows):.2f}-"
          f"{max(r['many']['efficiency'] for r in rows):.2f}); allreduce "
          f"{med('many', 'allreduce_s') * 1e3:.0f} ms/step, exposed "
          f"{med('many', 'exposed_s') * 1e3:.0f} ms, overlap {med('many', 'overlap'):.0%}, "
          f"{rows[0]['many']['bytes'] / 1e6:.1f} MB/step per rank")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "config": args.config, "batch": args.batch,
                       "size": args.size, "ranks": args.ranks, "rounds": rows}, f, indent=1)


if __name__ == "__main__":
    main()
