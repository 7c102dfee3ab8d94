"""Run under mpiexec by tests/test_distributed.py: one MPI job exercising convnet.distributed
directly. ``python mpi_job.py MODE [--timeout S]``; rank 0 prints one JSON line.

  start    ranks build their nets from different seeds: after wrapping, every rank holds rank
           0's weights (prints the largest difference between ranks)
  buckets  3 steps with small buckets: the summed gradients against numpy's sum of every
           rank's own, and the last step's bucket figures
  hang     rank 1 stops answering (sleeps) in step 2: rank 0 must stop within the timeout,
           naming rank 1
  die      rank 1 is killed (SIGKILL) in step 2; rank 0 prints the ranks' process ids first
"""
import argparse
import json
import os
import signal
import sys
import time

import numpy as np

from convnet import distributed
from convnet.config import load_config
from convnet.net import Net

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "fixtures", "tiny-sgd.cfg")


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((3, 12, 12, n)).astype(np.float32),
            (np.arange(n) % 10).astype(np.int32))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    world = distributed.from_environment(a.timeout)
    seed = world.rank if a.mode == "start" else 0
    net = Net(load_config(CONFIG), image_shape=(3, 12, 12), batch_size=4, seed=seed)
    dnet = distributed.DistributedNet(net, world, bucket_bytes=2048)
    report = {"ranks": world.size}
    pids = world.pids()
    if world.rank == 0:
        print(json.dumps({"pids": pids}), flush=True)
    if a.mode == "start":
        mine = sum(float(np.sum(v, dtype=np.float64)) for v in net.state_arrays().values())
        report["spread"] = abs(float(world.sum([mine], "the check")[0]) / world.size - mine)
    images, labels = batch(4 * world.size)
    for step in range(3 if a.mode == "buckets" else 6):
        if a.mode in ("hang", "die") and step == 2 and world.rank == 1:
            if a.mode == "hang":
                time.sleep(3600)
            os.kill(os.getpid(), signal.SIGKILL)
        before = {p.full_name: p.value.numpy().copy() for p in net.params}
        try:
            dnet.train_step(images, labels, step=step, epoch=0, progress=0.0)
        except distributed.DistributedError as e:  # as the trainer does: report, end the job
            print(e, file=sys.stderr, flush=True)
            distributed.abort(4)
        report["last"] = dnet.sync.last
    if a.mode == "buckets":
        # The gradient each rank would have computed alone, summed with numpy, against the
        # allreduced one (every rank's grads end up equal to the global batch's gradient).
        alone = Net(load_config(CONFIG), image_shape=(3, 12, 12), batch_size=4 * world.size)
        state = dict(before)
        state.update({p.full_name + ".inc": np.zeros(p.shape, np.float32) for p in alone.params})
        alone.load_state_arrays(state)
        alone.forward(images, labels, train=True, step=2)
        alone.backward()
        report["grad_error"] = max(
            float(np.max(np.abs(p.grad.numpy() - q.grad.numpy())) /
                  max(float(np.max(np.abs(q.grad.numpy()))), 1e-30))
            for p, q in zip(net.params, alone.params))
    if world.rank == 0:
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
