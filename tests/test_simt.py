"""The SIMT emulation itself (convnet._emu): correct kernels give numpy's answer in every thread
order, bit-identically; planted bugs are reported with file:line; the emulator survives errors;
several devices, peer copies and the environment variables work. Kernels: csrc/simt/selftest.cu."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import convnet

if "emu" not in convnet.backends():
    pytest.skip("convnet was built without the emulated backend", allow_module_level=True)

emu = convnet.device.module_for("emu")

ORDERS = [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]
SITE = r"\S*selftest\.cu:\d+"


@pytest.fixture(autouse=True)
def restore_order():
    previous = emu.thread_order()
    yield
    emu.set_thread_order(previous)


def inputs(n):
    """x[i] = float32(k) / 7 with k = (i * 7919) % 1000, as csrc/simt/selftest.cu computes it."""
    k = (np.arange(n, dtype=np.int64) * 7919) % 1000
    return k.astype(np.float32) / np.float32(7)


def run(name, order="forward", seed=0):
    emu.set_thread_order(order, seed)
    return np.array(emu.simt_selftest(name))


def expected_block_sums(n, threads):
    x = inputs(n).astype(np.float64)
    return np.array([x[b:b + threads].sum() for b in range(0, n, threads)])


def expected_transpose():
    return inputs(45 * 37).reshape(45, 37).T.ravel()


def expected_histogram():
    k = (np.arange(5003, dtype=np.int64) * 7919) % 1000
    return np.bincount(k % 37, minlength=37)


def check_block_reduce(r):
    np.testing.assert_allclose(r, expected_block_sums(1000, 256), rtol=1e-5)


def check_warp_reduce(r):
    n, threads = 1001, 96
    blocks = (n + threads - 1) // threads
    x = inputs(n)
    np.testing.assert_allclose(r[:blocks], expected_block_sums(n, threads), rtol=1e-5)
    big = np.array([(x[b:b + threads] > 70).sum() for b in range(0, n, threads)])
    np.testing.assert_array_equal(r[blocks:2 * blocks], big)  # ballot + popc
    np.testing.assert_array_equal(r[2 * blocks:], big)  # __syncthreads_count


CORRECT = {
    "block_reduce": check_block_reduce,
    "warp_reduce": check_warp_reduce,
    "transpose": lambda r: np.testing.assert_array_equal(r, expected_transpose()),
    "histogram": lambda r: np.testing.assert_array_equal(r, expected_histogram()),
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_kernel_in_every_order(name):
    results = []
    for order, seed in ORDERS:
        r = run(name, order, seed)
        CORRECT[name](r)
        results.append(r)
    for r, (order, seed) in zip(results[1:], ORDERS[1:]):
        # a race-free kernel computes the same bits whatever the order
        assert r.tobytes() == results[0].tobytes(), f"{name}: {order}:{seed} differs from forward"


def test_atomics():
    for order, seed in ORDERS:
        r = run("atomics", order, seed)
        exact = np.delete(r, 4)
        np.testing.assert_array_equal(exact, [1024, -2048, 1023, -1023, 7, 3072, 1023, 5120, 512, 256])
        assert 1 <= r[4] <= 1024  # atomicCAS chain: how far it gets depends on the schedule


def test_missing_barrier_shows_as_order_dependence():
    forward = run("race_reduce", "forward")
    reverse = run("race_reduce", "reverse")
    good = run("block_reduce", "forward")
    assert forward.tobytes() != reverse.tobytes(), "the race went unnoticed in both orders"
    assert not np.allclose(forward, good)
    # reverse order alone hides this race, which is why tests run >= 2 orders
    assert reverse.tobytes() == good.tobytes()


BUGS = {
    "transpose_edge": r"out-of-bounds write by kernel transpose_kernel launched at " + SITE
    + r":\n  allocation #\d+ \(6660 bytes .* on device 0\): bytes \[6660, \d+\) .*past the end",
    "oob_write": r"out-of-bounds write by kernel oob_kernel launched at " + SITE
    + r":\n  allocation #\d+ \(400 bytes .*\): bytes \[400, 404\) .*past the end",
    "early_return": r"kernel early_return_kernel launched at " + SITE + r", block \(0,0,0\): "
    r"__syncthreads at " + SITE + r" reached by only 50 of 64 threads: 14 exited before it",
    "shfl_exited": r"__shfl_down_sync at " + SITE + r" .*mask 0xffffffff\) names lane 20 of warp 0 "
    r"\(thread \(20,0,0\)\), which has exited",
    "divergent_barrier": r"threads wait at different barriers \(deadlock\): .*" + SITE
    + r" \(32 threads.*" + SITE + r" \(32 threads",
    "deadlock": r"__syncwarp at " + SITE + r" .*waits for lane 16 \(thread \(16,0,0\)\), which "
    r"waits at __syncthreads " + SITE + r" \(deadlock\)",
    "exception": r"kernel throw_kernel launched at " + SITE + r", block \(\d,0,0\), thread \(5,0,0\): "
    r"exception in kernel: kernel-side check failed in thread 5",
    "bad_block": r"invalid launch of kernel copy_kernel at " + SITE + r": more than 1024 threads",
    "bad_grid": r"invalid launch of kernel copy_kernel at " + SITE + r": a dimension is zero",
    "bad_smem": r"invalid launch of kernel uninit_shared_kernel at " + SITE
    + r": dynamic shared memory above 49152 bytes",
    "bad_copy": r"cudaErrorInvalidValue: cudaMemcpy DeviceToHost: source 0x[0-9a-f]+ is not device "
    r"memory \(.*" + SITE,
}


@pytest.mark.parametrize("name", sorted(BUGS))
@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_planted_bug_is_reported(name, order):
    with pytest.raises(RuntimeError, match=BUGS[name]):
        run(name, order)
    # the emulator is usable right after
    check_block_reduce(run("block_reduce", order))
    emu.simt_check_guards()


def test_uninitialised_shared_memory_reads_nan():
    blocks = 6
    for order, seed in ORDERS:
        r = run("uninit_shared", order, seed)
        bits, out = int(r[-1]), r[:-1].reshape(blocks, 2, 64)
        assert bits == 0x7FC0DEAD
        t = np.arange(64, dtype=float)
        np.testing.assert_array_equal(out[0], [t, t])  # block 0 writes every slot
        for b in range(1, blocks):  # the others only even ones: odd slots read the poison,
            for kind in range(2):  # static and dynamic shared memory, at every block start
                np.testing.assert_array_equal(out[b, kind, ::2], t[::2])
                assert np.isnan(out[b, kind, 1::2]).all(), (order, b, kind)


def test_static_shared_poisoning_is_active():
    run("block_reduce")
    assert emu.simt_stats()["static_shared_poisoned"]


def test_unwritten_device_memory_reads_nan():
    assert np.isnan(run("uninit_global")).all()


def test_dynamic_shared_memory_above_48k_after_opt_in():
    r = run("big_smem")
    np.testing.assert_array_equal(r[:64], np.arange(64))


def test_devices_and_peer_copies():
    r = run("devices")
    n = int(r[0])
    assert n == 2  # default CONVNET_EMU_DEVICES
    np.testing.assert_array_equal(r[1:17], np.arange(16) * 1.5)
    invalid_value, invalid_device, invalid_pointer = 1, 101, 17
    assert list(r[17:24]) == [invalid_device, invalid_value, invalid_pointer, invalid_pointer,
                              invalid_pointer, invalid_device, invalid_value]
    assert list(r[24:]) == [1, 1]


def _subprocess(code, **env):
    root = os.path.dirname(os.path.dirname(os.path.abspath(convnet.__file__)))
    full_env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.pop("CONVNET_SIMT_ORDER", None)
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", "import convnet._emu as e\n" + code], env=full_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_order_and_workers_from_environment():
    code = "print(e.thread_order()); print(e.simt_stats()['workers']); print(e.simt_selftest('race_reduce')[0])"
    good = expected_block_sums(1000, 256)[0]
    order, workers, first = _subprocess(code, CONVNET_SIMT_ORDER="reverse", CONVNET_EMU_THREADS="1")
    assert (order, workers) == ("reverse", "1")
    assert float(first) == pytest.approx(good, rel=1e-5)
    order, workers, first = _subprocess(code, CONVNET_SIMT_ORDER="forward", CONVNET_EMU_THREADS="3")
    assert (order, workers) == ("forward", "3")
    assert float(first) != pytest.approx(good, rel=1e-5)
    order, _, _ = _subprocess(code, CONVNET_SIMT_ORDER="random:7")
    assert order == "random:7"
    (n,) = _subprocess("print(e.simt_selftest('devices')[0])", CONVNET_EMU_DEVICES="3")
    assert float(n) == 3
    (poisoned,) = _subprocess("e.simt_selftest('block_reduce'); print(e.simt_stats()['static_shared_poisoned'])",
                              CONVNET_SIMT_POISON_SHARED="0")
    assert poisoned == "False"


def test_set_thread_order_api():
    emu.set_thread_order("random", 5)
    assert emu.thread_order() == "random:5"
    emu.set_thread_order("random:9")
    assert emu.thread_order() == "random:9"
    emu.set_thread_order("reverse")
    assert emu.thread_order() == "reverse"
    with pytest.raises(ValueError, match="unknown thread order"):
        emu.set_thread_order("sideways")
    assert emu.thread_order() == "reverse"


def test_throughput(capsys):
    emu.set_thread_order("forward")
    saxpy_ns, barrier_ns, switches, workers, saxpy_cpu, barrier_cpu = run("bench")
    # each wait at a barrier costs one switch into the fiber (and one out, not counted)
    assert 0.99 <= switches <= 1.1
    with capsys.disabled():
        print(f"\n[simt] {int(workers)} workers: barrier-free kernel {saxpy_ns:.1f} ns/thread "
              f"({saxpy_cpu:.1f} CPU); {barrier_ns:.1f} ns ({barrier_cpu:.1f} CPU) per thread per "
              f"__syncthreads")
