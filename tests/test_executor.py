"""The two-device executor: per-device schedules, transfers at exactly the cross-device edges,
two logical CPU devices running concurrently, emulated streams run in adversarial orders, planted
ordering bugs caught, and checkpoints moving between one and two devices."""
import os

import numpy as np
import pytest

import convnet
from convnet import data
from convnet.config import ConfigError, load_config
from convnet.gradcheck import CHECK_DATA
from convnet.net import Net, _Task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOWERS = os.path.join(ROOT, "layers", "tiny-towers.cfg")
STEPS = 4
# Emulated devices against the CPU: the two backends sum in different orders (other tilings), so
# losses agree to float32 rounding amplified by the steps (as in test_net.py).
LOSS_RTOL = 1e-5

# tiny-towers.cfg on 16x16 images: the edges between gpu=0 and gpu=1, with the floats per image
# of the producer's output (pool1 8x8x8, conv2a and conv2b 6x8x8, pool2a 6x4x4, drop3 16).
CROSS = {"pool1": (0, 1, 512), "conv2a": (0, 1, 384), "conv2b": (1, 0, 384),
         "pool2a": (0, 1, 96), "drop3": (1, 0, 16)}
CONSUMER = {"pool1": "conv2b", "conv2a": "cat2", "conv2b": "sum2", "pool2a": "cat3",
            "drop3": "fc4"}


def has_emu():
    return "emu" in convnet.backends()


needs_emu = pytest.mark.skipif(not has_emu(), reason="convnet was built without the emulated "
                                                     "backend")


@pytest.fixture(scope="module")
def batch():
    ds = data.open_source(CHECK_DATA, workers=0, color_noise=0.0, flip=False)
    images, labels = next(iter(ds.test_batches(16)))
    return images.copy(), labels.copy()


def make(device="cpu", single=False, seed=0):
    return Net(load_config(TOWERS), image_shape=(3, 16, 16), device=device, batch_size=16,
               seed=seed, single_device=single)


def train(net, images, labels, steps=STEPS, first=0):
    out = []
    for s in range(first, first + steps):
        st = net.train_step(images, labels, step=s, epoch=0, progress=s / 10)
        out.append(st["logprob"]["logprob"])
    return np.array(out)


def dev(kind, k):
    return str(convnet.Device(f"{kind}:{k}"))


def test_transfers_exactly_at_the_cross_device_edges(batch):
    net = make("cpu")
    assert [str(d) for d in net.devices] == ["cpu", "cpu:1"]
    train(net, *batch, steps=1)
    log = net.transfer_log
    n = batch[0].shape[-1]
    expected = []
    for name, (a, b, floats) in CROSS.items():
        expected.append((name, "fwd", dev("cpu", a), dev("cpu", b), floats * 4 * n))
        expected.append((f"{name}<-{CONSUMER[name]}", "bwd", dev("cpu", b), dev("cpu", a),
                         floats * 4 * n))
    got = [(r["edge"], r["direction"], r["from"], r["to"], r["bytes"]) for r in log]
    assert sorted(got) == sorted(expected)
    assert all(r["step"] == 0 for r in log)


def test_layer_table_and_schedule_show_devices_and_transfers():
    net = make("cpu")
    rows = {ln.split()[0]: ln for ln in net.table().splitlines() if ln.strip()}
    assert "cpu:1" in rows["conv2b"] and "xfer KB/img" in rows["layer"]
    assert "2.0+2.0" in rows["pool1"] and "0.1+0.1" in rows["drop3"]
    assert "xfer" not in make("cpu", single=True).table()
    sched = net.schedule()
    assert set(sched) == {"cpu", "cpu:1"}
    assert "[compute] fwd conv2b" in sched["cpu:1"]["forward"]
    assert "[copy] pool1 -> cpu:1" in sched["cpu"]["forward"]
    assert "[copy] dpool1 <- conv2b" in sched["cpu:1"]["backward"]
    assert "[compute] land dpool1 <- conv2b" in sched["cpu"]["backward"]
    # Each device updates its own weights.
    assert "[compute] update conv2b.w" in sched["cpu:1"]["update"]
    assert not any("conv2b" in t for t in sched["cpu"]["update"])


def test_logical_cpu_devices_split_the_cores():
    net = make("cpu")
    cores = net.cores
    assert set(cores) == {"cpu", "cpu:1"}
    if len(os.sched_getaffinity(0)) >= 2:
        assert not set(cores["cpu"]) & set(cores["cpu:1"])
    threads = {s._thread.name for s in net.streams.values()}
    assert threads == {"cpu-compute", "cpu-copy", "cpu:1-compute", "cpu:1-copy"}
    net.close()
    assert all(not s._thread.is_alive() for s in net.streams.values()) if net.streams else True


def test_two_cpu_devices_match_one_device(batch):
    # Bit for bit: the same kernels (single-threaded at these sizes on one device too), and a
    # gradient from the other device added to the producer's as a kernel accumulating in place
    # adds it (one float32 addition per element, in the same order).
    one, two = make("cpu", single=True), make("cpu")
    assert len(one.devices) == 1 and len(two.devices) == 2
    lo, lt = train(one, *batch), train(two, *batch)
    assert lo[-1] < lo[0]
    np.testing.assert_array_equal(lt, lo)
    so, st = one.state_arrays(), two.state_arrays()
    assert so.keys() == st.keys()
    for k in so:
        np.testing.assert_array_equal(st[k], so[k], err_msg=k)


def test_two_cpu_devices_same_seed_same_bits(batch):
    a, b = make("cpu"), make("cpu")
    np.testing.assert_array_equal(train(a, *batch), train(b, *batch))
    sa, sb = a.state_arrays(), b.state_arrays()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_checkpoint_moves_between_one_and_two_devices(batch):
    # Resuming is exact on two devices, and the arrays load on one device and back.
    straight = make("cpu")
    train(straight, *batch, steps=4)
    first = make("cpu")
    train(first, *batch, steps=2)
    saved = first.state_arrays()
    one = make("cpu", single=True)
    one.load_state_arrays(saved)
    back = make("cpu")
    back.load_state_arrays(one.state_arrays())
    train(back, *batch, steps=2, first=2)
    for k, v in straight.state_arrays().items():
        np.testing.assert_array_equal(back.state_arrays()[k], v, err_msg=k)


def test_cpu_devices_read_the_batch_in_place(batch):
    # CPU devices read the caller's arrays: no upload task, no copy, no buffer for the batch;
    # a reader of the data layer on another device reads them too, without a transfer.
    cfg = load_config(TOWERS)
    conv1 = cfg.layers[[s.name for s in cfg.layers].index("conv1")]
    conv1.values["gpu"] = ("1", conv1.file)  # the data layer stays on cpu, its reader on cpu:1
    two = Net(cfg, image_shape=(3, 16, 16), device="cpu", batch_size=16)
    sched = two.schedule()
    assert not any("upload" in t for d in sched.values() for ph in d.values() for t in ph)
    assert "data" not in two.y and not any(name == "data" for name, _ in two.remote)
    one = make("cpu", single=True)
    np.testing.assert_array_equal(train(two, *batch, steps=2), train(one, *batch, steps=2))
    assert not any(r["edge"] in ("data", "labels") for r in two.transfer_log)
    np.testing.assert_array_equal(two.output("data"), batch[0])
    np.testing.assert_array_equal(two.output("labels", 5), batch[1][:5])
    assert "data" in two.output_names() and "logprob" not in two.output_names()
    for images, labels, words in ((batch[0].astype(np.float64), batch[1], "images float64"),
                                  (batch[0][:, :8], batch[1], r"images float32 \(3, 8, 16, 16\)"),
                                  (batch[0], batch[1].astype(np.int64), "labels int64")):
        with pytest.raises(ValueError, match=words):
            two.train_step(images, labels, step=3, epoch=0, progress=0)


def test_crossings_overlap_with_each_towers_own_work():
    # Where the towers meet, each device first does what the other waits for or what needs
    # nothing from it: forward, the term of its own tower's input; backward, the gradient the
    # other device waits for, then its own weight gradients, and only then, right before the
    # producer's backward pass, the gradient landing from the other device.
    net = Net(load_config(os.path.join(ROOT, "layers", "tiny-alexnet-2gpu.cfg")),
              image_shape=(3, 24, 24), device="cpu", batch_size=8)
    sched = net.schedule()
    for d, t in (("cpu", "a"), ("cpu:1", "b")):
        fwd, bwd = sched[d]["forward"], sched[d]["backward"]
        for L in (f"conv3{t}", f"fc6{t}", f"fc7{t}"):
            assert fwd.index(f"[compute] fwd {L}: inputs on {d}") + 1 == \
                fwd.index(f"[compute] fwd {L}")
            assert bwd.index(f"[compute] bwd {L}: gradients to other devices") + 1 == \
                bwd.index(f"[compute] bwd {L}")
        other = "b" if t == "a" else "a"
        land = bwd.index(f"[compute] land dpool2{t} <- conv3{other}")
        assert bwd.index(f"[compute] bwd conv3{t}") < land
        assert bwd[land + 1] == f"[compute] bwd pool2{t}"
    assert "[compute] fwd fc8: inputs on cpu" in sched["cpu"]["forward"]


def test_tracing_records_every_task_in_schedule_order(batch):
    net = make("cpu")
    train(net, *batch, steps=1)
    assert net.trace() == {}
    net.set_tracing(True)
    train(net, *batch, steps=1, first=1)
    trace = net.trace()
    sched = net.schedule()
    for d in ("cpu", "cpu:1"):
        rows = trace[(d, "compute")]
        assert all(a <= b for _, a, b, _ in rows)
        assert all(b <= a for (_, _, b, _), (_, a, _, _) in zip(rows, rows[1:]))
        # The worker thread's CPU seconds: none in a wait, at most the task's span (it runs on
        # one thread; a task on lent cores counts this thread's share), and some in the step.
        assert all(c == 0 for label, _, _, c in rows if label.startswith("wait "))
        assert all(0 <= c <= b - a + 1e-3 for _, a, b, c in rows)
        assert sum(c for *_, c in rows) > 0
        ran = [f"[compute] {label}" for label, *_ in rows if not label.startswith("wait ")]
        assert ran == [t for phase in ("forward", "backward", "update")
                       for t in sched[d][phase] if t.startswith("[compute]")]
        assert all(label.split()[1].split("/")[0] in ("sent", "gsent", "landed", "used", "y")
                   for label, *_ in rows if label.startswith("wait "))
    copies = [label for label, *_ in trace[("cpu", "copy")]]
    assert "pool1 -> cpu:1" in copies
    net.set_tracing(False)
    assert net.trace() == {}


def test_device_mistakes_are_clear():
    assert convnet.Device("cpu:1").index == 1 and str(convnet.Device("cpu:0")) == "cpu"
    with pytest.raises(convnet.DeviceError, match="logical CPU devices"):
        convnet.device.backend("cpu:999")
    cfg = load_config(TOWERS)
    cfg.layers[[s.name for s in cfg.layers].index("conv2b")].values["gpu"] = \
        ("999", cfg.layers[0].file)
    with pytest.raises(ConfigError, match="conv2b.*gpu|gpu.*conv2b"):
        Net(cfg, image_shape=(3, 16, 16), device="cpu", batch_size=4)


def test_an_error_on_a_worker_reaches_the_caller(batch):
    images, labels = batch
    net = make("cpu")
    bad = labels.copy()
    bad[3] = 99  # labels outside [0, 10): the cost kernel raises on its device's thread
    with pytest.raises(ValueError, match="label"):
        net.train_step(images, bad, step=0, epoch=0, progress=0)
    train(net, images, labels, steps=1)  # the net still works afterwards


# -- emulated devices: streams in adversarial orders -------------------------------------------
ORDERS = ["sync", "deferred", "reversed", "random:1", "random:2"]


@pytest.fixture
def stream_order():
    emu = convnet.device.module_for("emu") if has_emu() else None
    before = emu.stream_order() if emu else None
    yield (lambda name: emu.set_stream_order(name))
    if emu:
        emu.set_stream_order(before)


@needs_emu
def test_emu_two_devices_match_one_cpu_device_in_every_stream_order(batch, stream_order):
    ref = train(make("cpu", single=True), *batch)
    bits = None
    for order in ORDERS:
        stream_order(order)
        net = make("emu:0")
        losses = train(net, *batch)
        np.testing.assert_allclose(losses, ref, rtol=LOSS_RTOL, err_msg=order)
        state = net.state_arrays()
        if bits is None:
            bits = state
        for k in bits:  # events fix every order that matters: the same bits in every order
            np.testing.assert_array_equal(state[k], bits[k], err_msg=f"{order}: {k}")


def _first_wrong_output(net, good):
    """The first layer (in forward order) whose output differs from the intact run's."""
    for L in net.order:
        if L.is_cost:
            continue
        a, b = net.output(L.name), good.output(L.name)
        if not np.array_equal(a, b):
            return f"{L.name} ({'NaN' if np.isnan(a).any() else 'stale'} data in {L.name}'s output)"
    return None


def _plant(net, label, bug):
    """Plants an ordering bug in a compiled schedule: 'no-wait' drops the waits of task `label`
    on the transfers it reads; 'early-record' records its events before it instead of after."""
    tasks = net.tasks["forward"]
    i = next(k for k, t in enumerate(tasks) if t.label == label)
    t = tasks[i]
    if bug == "no-wait":
        t.waits = [e for e in t.waits if not e.name.startswith("sent/pool1")]
    else:
        tasks.insert(i, _Task(t.device, t.role, "early record", lambda n, ctx: None,
                              records=t.records))
        t.records = []


# Which ready stream the emulator runs first depends on every stream the process has created so
# far (deferred: the oldest; reversed: the newest), so a planted bug is looked for in several
# adversarial orders, not one: it must show in at least one, and wherever it shows, first in the
# layer that reads the unordered buffer.
ADVERSARIAL = ["deferred", "reversed"] + [f"random:{seed}" for seed in range(1, 9)]


@needs_emu
@pytest.mark.parametrize("bug,label,victim", [
    ("no-wait", "fwd conv2b", "conv2b"),
    ("early-record", "fwd pool1", "conv2b"),
])
def test_planted_ordering_bugs_are_caught(batch, stream_order, bug, label, victim):
    images, labels = batch
    caught = None
    for order in ADVERSARIAL:
        stream_order(order)
        good = make("emu:0")
        good.forward(images, labels, train=True, step=0)
        broken = make("emu:0")
        _plant(broken, label, bug)
        broken.forward(images, labels, train=True, step=0)
        wrong = _first_wrong_output(broken, good)
        if wrong is not None:
            assert wrong.startswith(victim), f"{order}: {wrong}"
            caught = order
            break
    assert caught, f"no stream order of {ADVERSARIAL} exposed the planted {bug} bug"
    # Run at once, in issue order, the same broken schedule happens to work: only the
    # adversarial orders expose it.
    stream_order("sync")
    lucky = make("emu:0")
    _plant(lucky, label, bug)
    lucky.forward(images, labels, train=True, step=0)
    assert _first_wrong_output(lucky, good) is None


def test_helpers_from_the_schedule_follow_chains_of_events():
    # Device a: a1, a2, a3; a1's output goes to b through a's copy stream, b's only task waits
    # for it, and a3 waits for b's task. b cannot run anything during a1 (its task waits for
    # a1 through the copy) but runs during a2; a waits for b's task before a3, after which b
    # has nothing left in the step: it helps a1 and a3, not a2.
    a, b = convnet.Device("cpu"), convnet.Device("cpu:1")
    y, sent, done = (convnet.streams.Event(a, k) for k in ("y", "sent", "done"))
    tasks = [_Task(a, "compute", "a1", None, records=[y]),
             _Task(a, "copy", "a1 -> b", None, [y], [sent]),
             _Task(a, "compute", "a2", None),
             _Task(b, "compute", "b1", None, [sent], [done]),
             _Task(a, "compute", "a3", None, [done])]
    Net._find_helpers(tasks)
    assert [(t.label, [str(e) for e in t.helpers]) for t in tasks if t.role == "compute"] == \
        [("a1", ["cpu:1"]), ("a2", []), ("b1", []), ("a3", ["cpu:1"])]


def test_a_blocked_tower_lends_its_core_to_fc8():
    # fc8 (on cpu), the softmax and the cost run while cpu:1 has nothing to do but wait for
    # fc8's gradient: exactly those tasks are helped, fc8's backward runs whole (its input
    # gradient for cpu:1 is not sent ahead: cpu:1 would wait anyway) on both devices' cores,
    # and afterwards the stream is back on its own core with one thread.
    net = Net(load_config(os.path.join(ROOT, "layers", "tiny-alexnet-2gpu.cfg")),
              image_shape=(3, 24, 24), device="cpu", batch_size=8)
    helped = [(str(t.device), t.label, [str(e) for e in t.helpers])
              for phase in ("forward", "backward", "update") for t in net.tasks[phase]
              if t.helpers]
    assert helped == [("cpu", f"{p} {L}", ["cpu:1"]) for p, L in
                      (("fwd", "fc8"), ("fwd", "probs"), ("fwd", "logprob"),
                       ("bwd", "logprob"), ("bwd", "fc8"))]
    assert "[compute] bwd fc8: gradients to other devices" not in \
        net.schedule()["cpu"]["backward"]
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: both devices share it, there is nothing to lend")
    cpu0 = convnet.Device("cpu")
    lent = net._lent_cores(next(t for t in net.tasks["forward"] if t.label == "fwd fc8"))
    assert lent == set(net.cores["cpu"]) | set(net.cores["cpu:1"])
    mod, seen = convnet.device.module_for("cpu"), []
    stream = net.streams[(cpu0, "compute")]
    probe = lambda: seen.append((os.sched_getaffinity(0), mod.num_threads()))  # noqa: E731
    stream.submit(probe, "probe", lent)
    stream.submit(probe, "probe")
    net.drain()
    assert seen == [(lent, len(lent)), (set(net.cores["cpu"]), len(net.cores["cpu"]))]
    net.close()


def test_lent_cores_on_an_unpinned_stream_change_only_the_thread_count():
    # A stream with no cores of its own (not pinned) runs a helped task with the lent cores'
    # thread count and no pinning (there would be nothing to pin it back to), then its own.
    from convnet.streams import make_stream
    cpu0, mod, seen = convnet.Device("cpu"), convnet.device.module_for("cpu"), []
    stream = make_stream(cpu0, "compute", concurrent=True, cores=None)
    before = os.sched_getaffinity(0)
    probe = lambda: seen.append((os.sched_getaffinity(0), mod.num_threads()))  # noqa: E731
    stream.submit(probe, "helped", {0, 1})
    stream.submit(probe, "own")
    stream.synchronize()
    assert seen == [(before, 2), (before, 1)]


def test_a_cpu_stream_wakes_the_host_once_its_queue_is_empty():
    # The host blocks in synchronize until the worker has run every item; the worker wakes it
    # when its queue runs empty, not after every item (a step has hundreds). Held at a wait
    # until all 50 items are queued, the worker wakes it exactly once, after the last.
    import threading
    from convnet.streams import Event, make_stream

    class Counting(threading.Condition):
        wakes = 0

        def notify_all(self):
            Counting.wakes += 1
            super().notify_all()

    cpu0 = convnet.Device("cpu")
    stream = make_stream(cpu0, "compute", concurrent=True, cores=None)
    stream._idle = Counting()
    gate, ran = Event(cpu0, "gate"), []
    gate.records = 1  # recorded on no stream: fired below by the host
    stream.wait(gate)
    for i in range(50):
        stream.submit(lambda i=i: ran.append(i), "item")
    gate._fire(1)
    stream.synchronize()
    assert ran == list(range(50))
    assert Counting.wakes == 1
    stream.submit(lambda: ran.append(50), "item")  # and again for the next batch of items
    stream.synchronize()
    assert ran == list(range(51)) and Counting.wakes == 2
    stream.close()
