"""The executor on CUDA-like devices without host waits inside a step: the cost records kept on
the device (logreg_record), the emulator's count of host-blocking calls per training step, two
logical devices sharing one emulated device, and the caching allocator's cross-stream hold-back.

Runs after test_executor.py (file order): the emulator picks which ready stream runs first from
every stream created so far, and the logical devices made here add streams."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convnet
from convnet import data, ops
from convnet.config import ConfigError, load_config
from convnet.gradcheck import CHECK_DATA
import convnet.net
from convnet.net import Net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOWERS = os.path.join(ROOT, "layers", "tiny-towers.cfg")
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
# Emulated devices against the CPU: other summation orders (as in test_executor.py).
LOSS_RTOL = 1e-5

needs_emu = pytest.mark.skipif("emu" not in convnet.backends(),
                               reason="convnet was built without the emulated backend")


@pytest.fixture(scope="module")
def batch():
    ds = data.open_source(CHECK_DATA, workers=0, color_noise=0.0, flip=False)
    images, labels = next(iter(ds.test_batches(16)))
    return images.copy(), labels.copy()


@pytest.fixture
def stream_order():
    emu = convnet.device.module_for("emu") if "emu" in convnet.backends() else None
    before = emu.stream_order() if emu else None
    yield (lambda name: emu.set_stream_order(name))
    if emu:
        emu.set_stream_order(before)


def make(cfg=TOWERS, device="emu:0", **kw):
    return Net(load_config(cfg), image_shape=(3, 16, 16), device=device, batch_size=16, **kw)


def losses(stats):
    return np.array([s["logprob"]["logprob"] for s in stats])


# -- logreg_record: the cost sums kept on the device ---------------------------------------------
@pytest.mark.parametrize("classes,images", [(7, 5), (1, 1), (12, 33)])
def test_logreg_record_gives_logreg_cost_exactly(device, classes, images):
    # `device`: cpu, emu in two thread orders, cuda:0 where there is a GPU (tests/conftest.py).
    rng = np.random.default_rng(classes * 100 + images)
    logits = rng.standard_normal((classes, images)).astype(np.float32)
    labels = rng.integers(0, classes, images).astype(np.int32)
    probs = ops.softmax(convnet.tensor(logits, device=device))
    lab = convnet.tensor(labels, device=device)
    want = ops.logreg_cost(probs, lab)
    nll = convnet.empty((images,), np.float32, device)
    rank = convnet.empty((images,), np.int32, device)
    records = convnet.zeros((3, ops.COST_RECORD_INTS), np.int32, device)
    ops.logreg_record(probs, lab, nll, rank, records, 2)
    got = ops.cost_records(records.numpy(), [2], classes)[0]
    assert got == want  # the same sums in the same order: equal, not close
    assert isinstance(got["top1"], int) and isinstance(got["logprob"], float)


def test_logreg_record_keeps_a_bad_label_for_the_reader(device):
    probs = ops.softmax(convnet.tensor(np.zeros((4, 6), np.float32), device=device))
    lab = convnet.tensor(np.array([0, 1, 9, 2, -1, 3], np.int32), device=device)
    nll = convnet.empty((6,), np.float32, device)
    rank = convnet.empty((6,), np.int32, device)
    records = convnet.zeros((2, ops.COST_RECORD_INTS), np.int32, device)
    ops.logreg_record(probs, lab, nll, rank, records, 0)  # recorded, not raised
    with pytest.raises(ValueError, match=r"labels\[2\] = 9 is not a class index in \[0, 4\)"):
        ops.cost_records(records.numpy(), [0], 4)
    with pytest.raises(ValueError, match="slot 2 is not a row of records"):
        ops.logreg_record(probs, lab, nll, rank, records, 2)
    with pytest.raises(ValueError, match="records must be"):
        ops.logreg_record(probs, lab, nll, rank, convnet.zeros((2, 4), np.int32, device), 0)
    with pytest.raises(ValueError, match="nll"):
        ops.logreg_record(probs, lab, convnet.empty((5,), np.float32, device), rank, records, 0)


# -- no host wait inside a step --------------------------------------------------------------------
@needs_emu
@pytest.mark.parametrize("cfg,uploading", [(TINY, 1), (TOWERS, 1)])
@pytest.mark.parametrize("order", ["sync", "deferred"])
def test_a_training_step_waits_only_for_the_pinned_buffer_two_steps_back(batch, stream_order,
                                                                          cfg, uploading, order):
    """The design: per step, one cudaEventSynchronize per device that uploads the batch, on the
    upload that last used the pinned buffer now refilled (two steps back; none in the first
    two steps), and nothing else: no stream or device synchronisation, no synchronous copy, no
    copy from pageable memory. The statistics are read after the steps, in one go."""
    emu = convnet.device.module_for("emu")
    stream_order(order)
    images, labels = batch
    net = make(cfg)
    steps = 5
    emu.reset_host_waits()
    stats = [net.train_step(images, labels, step=s, epoch=0, progress=s / 10)
             for s in range(steps)]
    waits = emu.host_waits()
    assert waits == {"stream_sync": 0, "event_sync": uploading * (steps - 2), "device_sync": 0,
                     "memcpy_sync": 0, "pageable_async": 0}, waits
    assert all(s._values is None for s in stats)  # nothing read yet
    emu.reset_host_waits()
    got = losses(stats)
    read = emu.host_waits()
    assert read["event_sync"] == 0 and read["stream_sync"] >= 1  # the one read, after the steps
    assert all(s._values is not None for s in stats)
    # The same values as reading every step (which waits each time).
    stream_order("sync")
    eager = make(cfg)
    each = np.array([eager.train_step(images, labels, step=s, epoch=0,
                                      progress=s / 10)["logprob"]["logprob"]
                     for s in range(steps)])
    np.testing.assert_array_equal(got, each)
    ref = make(cfg, device="cpu", single_device=True)
    cpu = np.array([ref.train_step(images, labels, step=s, epoch=0,
                                   progress=s / 10)["logprob"]["logprob"] for s in range(steps)])
    np.testing.assert_allclose(got, cpu, rtol=LOSS_RTOL)


@needs_emu
def test_unread_statistics_wrap_round_the_ring(batch, monkeypatch):
    # More unread steps than the ring holds: the oldest are read (one wait) before their record
    # is reused, and every step's statistics stay right.
    monkeypatch.setattr(convnet.net, "STATS_RING", 4)
    images, labels = batch
    net = make(TINY)
    eager = make(TINY)
    n = convnet.net.STATS_RING + 3
    lazy = [net.forward(images, labels, train=False, step=0)["logprob"]]  # a test pass reads
    held = [net.train_step(images[..., :5], labels[:5], step=s, epoch=0, progress=0)
            for s in range(n)]
    want = [eager.forward(images, labels, train=False, step=0)["logprob"]] + [
        dict(eager.train_step(images[..., :5], labels[:5], step=s, epoch=0,
                              progress=0)["logprob"]) for s in range(n)]
    assert lazy + [dict(h["logprob"]) for h in held] == want


@needs_emu
def test_a_bad_label_is_refused_before_anything_is_issued(batch):
    images, labels = batch
    net = make(TOWERS)
    bad = labels.copy()
    bad[3] = 99
    with pytest.raises(ValueError, match=r"labels\[3\] = 99 is not a class index in \[0, 10\)"):
        net.train_step(images, bad, step=0, epoch=0, progress=0)
    assert np.isfinite(losses([net.train_step(images, labels, step=0, epoch=0, progress=0)])).all()


# -- two logical devices on one device ---------------------------------------------------------
@needs_emu
def test_towers_on_one_emulated_device_match_two_devices(batch):
    images, labels = batch
    two = make(TOWERS)
    shared = make(TOWERS, towers_on="emu:0,emu:0")
    emu = convnet.device.module_for("emu")
    a, b = shared.devices
    assert a == convnet.Device("emu:0") and b.index >= 2 and emu.physical_device(b.index) == 0
    assert make(TOWERS, towers_on=["emu:0", "emu:0"]).devices == shared.devices  # same share
    lt = losses([two.train_step(images, labels, step=s, epoch=0, progress=0) for s in range(3)])
    ls = losses([shared.train_step(images, labels, step=s, epoch=0, progress=0)
                 for s in range(3)])
    np.testing.assert_array_equal(ls, lt)
    rename = {str(b): "emu:1"}
    got = sorted((r["edge"], r["direction"], r["bytes"], rename.get(r["from"], r["from"]),
                  rename.get(r["to"], r["to"])) for r in shared.transfer_log)
    want = sorted((r["edge"], r["direction"], r["bytes"], r["from"], r["to"])
                  for r in two.transfer_log)
    assert got == want and len(got) == 10


@pytest.mark.parametrize("device", ["cuda:0"])
def test_both_towers_on_one_gpu_train_like_one_cpu_device(batch, device):
    """On a GPU (tools/gpu_check.py runs it): both towers on cuda:0 as two logical devices.
    Allowed: 1e-4 relative (nvcc contracts multiply-adds, the CPU sums in other orders)."""
    if not convnet.cuda.is_available():
        pytest.skip(f"no GPU: {convnet.cuda.unavailable_reason()}")
    images, labels = batch
    net = make(TOWERS, device=device, towers_on=f"{device},{device}")
    cuda = convnet.device.module_for("cuda")
    assert [cuda.physical_device(d.index) for d in net.devices] == [0, 0]
    ref = make(TOWERS, device="cpu", single_device=True)
    got = losses([net.train_step(images, labels, step=s, epoch=0, progress=0) for s in range(4)])
    want = losses([ref.train_step(images, labels, step=s, epoch=0, progress=0) for s in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert len(net.transfer_log) == 10


@needs_emu
def test_bad_tower_mappings_are_clear():
    with pytest.raises(convnet.DeviceError, match="towers_on: emu:7 does not exist"):
        make(TOWERS, towers_on="emu:0,emu:7")
    with pytest.raises(ValueError, match="towers_on: cpu is not a emu device"):
        make(TOWERS, towers_on="emu:0,cpu")
    with pytest.raises(ConfigError, match="gpu"):
        make(TOWERS, towers_on="emu:0")  # no device for gpu=1: names the layer's gpu key
    with pytest.raises(ValueError, match="names a CPU device twice"):
        make(TOWERS, device="cpu", towers_on="cpu:1,cpu:1")


# The emulated device count is fixed when the emulator starts: a child process with one device.
ONE_DEVICE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import convnet
    from convnet import data
    from convnet.config import load_config
    from convnet.gradcheck import CHECK_DATA
    from convnet.net import Net
    sys.path.insert(0, {tests!r})
    from test_executor import _first_wrong_output, _plant, ADVERSARIAL

    emu = convnet.device.module_for("emu")
    assert emu.device_count()[0] == 1
    ds = data.open_source(CHECK_DATA, workers=0, color_noise=0.0, flip=False)
    images, labels = next(iter(ds.test_batches(16)))

    def make(device="emu:0", **kw):
        return Net(load_config({cfg!r}), image_shape=(3, 16, 16), device=device,
                   batch_size=16, **kw)

    ref = make("cpu", single_device=True)
    ref_losses = [ref.train_step(images, labels, step=s, epoch=0, progress=s / 10)
                  ["logprob"]["logprob"] for s in range(4)]
    bits = None
    for order in ["sync", "deferred", "reversed", "random:1", "random:2"]:
        emu.set_stream_order(order)
        net = make()
        assert [str(d) for d in net.devices] == ["emu:0", "emu:1"], net.devices
        assert emu.physical_device(1) == 0
        assert "gpu=1 on emu:0" in net.placement_notes[0], net.placement_notes
        got = [net.train_step(images, labels, step=s, epoch=0, progress=s / 10)
               ["logprob"]["logprob"] for s in range(4)]
        np.testing.assert_allclose(got, ref_losses, rtol={rtol})
        state = net.state_arrays()
        bits = bits or state
        for k in bits:
            np.testing.assert_array_equal(state[k], bits[k], err_msg=order + k)
        log = sorted((r["edge"], r["direction"], r["from"], r["to"], r["bytes"])
                     for r in net.transfer_log)
        assert len(log) == 10 and {{r[2] for r in log}} == {{"emu:0", "emu:1"}}, log
    # A planted missing wait between the two logical devices shows in an adversarial order.
    caught = None
    for order in ADVERSARIAL:
        emu.set_stream_order(order)
        good = make()
        good.forward(images, labels, train=True, step=0)
        broken = make()
        _plant(broken, "fwd conv2b", "no-wait")
        broken.forward(images, labels, train=True, step=0)
        wrong = _first_wrong_output(broken, good)
        if wrong is not None:
            assert wrong.startswith("conv2b"), (order, wrong)
            caught = order
            break
    assert caught, "no order exposed the planted missing wait"
    print("ok", caught)
""")


@needs_emu
def test_two_towers_on_one_emulated_device_in_every_stream_order():
    """CONVNET_EMU_DEVICES=1: tower gpu=1 runs on emu:0 as logical device emu:1, with the same
    schedule, transfers and (to float rounding) the one-device CPU losses; the same bits in
    every stream order; a planted missing wait is caught."""
    script = ONE_DEVICE_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)),
                                      cfg=TOWERS, rtol=LOSS_RTOL)
    env = dict(os.environ, CONVNET_EMU_DEVICES="1")
    env.pop("CONVNET_SIMT_STREAMS", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok")


# -- emulated pinned memory -------------------------------------------------------------------------
@needs_emu
def test_emulated_copies_from_pinned_memory_are_queued_and_from_pageable_memory_wait(
        stream_order):
    """As on a GPU: an async copy from pinned memory runs when its stream gets there (so the
    host must not rewrite the buffer before an event says so), one from pageable memory is
    done before the call returns, and only the latter counts as a host wait."""
    emu = convnet.device.module_for("emu")
    stream_order("deferred")
    copy = emu.copy_stream(0)
    pinned = emu.pinned_empty(16).view(np.float32)
    pageable = np.ones(4, np.float32)
    to_pinned, to_pageable = (convnet.empty((4,), device="emu:0") for _ in range(2))
    emu.synchronize(0)
    emu.reset_host_waits()
    pinned[:] = 1.0
    emu.copy_from_host_async(to_pageable._buffer, 0, pageable, copy)  # drains, copies, returns
    emu.copy_from_host_async(to_pinned._buffer, 0, pinned, copy)  # queued
    assert emu.host_waits()["pageable_async"] == 1
    pinned[:] = 2.0  # too early: the queued copy has not read it yet
    pageable[:] = 2.0  # harmless: already copied
    emu.stream_synchronize(copy, 0)
    np.testing.assert_array_equal(to_pinned.numpy(), 2.0)
    np.testing.assert_array_equal(to_pageable.numpy(), 1.0)


# -- the caching allocator's cross-stream hold-back ------------------------------------------------
@needs_emu
@pytest.mark.parametrize("hold_back", [True, False])
def test_a_block_still_read_by_a_copy_stream_is_not_handed_out(stream_order, hold_back):
    """A block freed while another stream's queued copy still reads it: with the hold-back the
    next allocation gets another block and the copy delivers the freed tensor's data; without
    it (the planted bug) the next allocation reuses the block, its fill on the compute stream
    runs first, and the copy delivers that instead."""
    emu = convnet.device.module_for("emu")
    stream_order("deferred")  # the compute stream (older) runs before the copy stream
    emu.set_allocator_checks(cache=True, hold_back=hold_back)
    try:
        n = 1000
        src = convnet.full((n,), 1.0, device="emu:0")
        dst = convnet.empty((n,), device="emu:0")
        emu.synchronize(0)  # src is written before the copy stream reads it
        copy = emu.copy_stream(0)
        emu.copy_device_async(dst._buffer, 0, src._buffer, 0, src.nbytes, copy)  # queued
        old = src._buffer.ptr
        del src  # freed while the copy stream still reads it
        reused = convnet.full((n,), 2.0, device="emu:0")  # a kernel on the compute stream
        emu.stream_synchronize(copy, 0)
        got = dst.numpy()
        if hold_back:
            assert reused._buffer.ptr != old
            np.testing.assert_array_equal(got, 1.0)
        else:
            assert reused._buffer.ptr == old
            np.testing.assert_array_equal(got, 2.0)
    finally:
        emu.set_allocator_checks(cache=False, hold_back=True)


# -- the trainer reads the statistics only when it prints ----------------------------------------
def _batch_lines(directory):
    with open(os.path.join(directory, "log.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in ("time", "images_per_s", "input_wait_ms")}
            for r in lines if r["kind"] == "batch"]


@needs_emu
def test_the_trainer_prints_and_logs_the_same_statistics_read_late(tmp_path, capsys):
    """On emu:0 the trainer reads the statistics every --print-every batches: the log holds,
    per batch, the values of a run reading every batch (--print-every 1), and the progress
    lines both print at batch 3 and 6 are identical but for the rate and time."""
    from convnet.train import main
    common = [TINY, "--device", "emu:0", "--data", "synthetic:size=12,train=96,test=16",
              "--batch-size", "16", "--epochs", "1", "--workers", "0"]
    assert main(common + ["--print-every", "1", "--save-dir", str(tmp_path / "each")]) == 0
    each = capsys.readouterr().err
    assert main(common + ["--print-every", "3", "--save-dir", str(tmp_path / "late")]) == 0
    late = capsys.readouterr().err
    assert _batch_lines(tmp_path / "late") == _batch_lines(tmp_path / "each")
    assert len(_batch_lines(tmp_path / "late")) == 6

    def stats_of(err, batch):
        line = next(ln for ln in err.splitlines() if f"batch {batch}/6:" in ln)
        return line[line.index("logprob"):]
    for b in (3, 6):
        assert stats_of(late, b) == stats_of(each, b)


@needs_emu
def test_with_the_caching_allocator_a_step_reaches_neither_malloc_nor_free(batch, stream_order):
    """cudaFree, which waits for the device, is not in the host-wait count because emulation
    frees every block; with the caching allocator on (as on a GPU) the steps after the first
    allocate only from the cache, so no step reaches cudaMalloc or cudaFree, and the host
    waits stay as designed. Deferred order: blocks freed while a queued copy reads them are
    held back (cudaEventQuery does not drain), and the training is unchanged."""
    emu = convnet.device.module_for("emu")
    stream_order("deferred")
    images, labels = batch
    plain = make(TOWERS)
    want = losses([plain.train_step(images, labels, step=s, epoch=0, progress=s / 10)
                   for s in range(4)])
    emu.set_allocator_checks(cache=True, hold_back=True)
    try:
        net = make(TOWERS)
        stats = [net.train_step(images, labels, step=0, epoch=0, progress=0)]
        net.drain()
        before = [emu.memory_stats(d) for d in range(2)]
        emu.reset_host_waits()
        stats += [net.train_step(images, labels, step=s, epoch=0, progress=s / 10)
                  for s in range(1, 4)]
        waits = emu.host_waits()
        after = [emu.memory_stats(d) for d in range(2)]
        for b, a in zip(before, after):
            assert a["allocs"] - a["cache_hits"] == b["allocs"] - b["cache_hits"], (b, a)
        assert waits["event_sync"] == 2 and sum(waits.values()) == 2, waits
        np.testing.assert_array_equal(losses(stats), want)
    finally:
        emu.set_allocator_checks(cache=False, hold_back=True)
