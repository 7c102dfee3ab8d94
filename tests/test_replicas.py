"""Data parallelism within a process (gpu=0,1,... replicas) and cuda-convnet2's hybrid scheme
(pass layers): the multi-device ImageNet files in cuda-convnet2's syntax load unmodified; the
replicated nets train like their one-device twins (the same config without gpu=) on cpu, on
cpu:N and on emu:0/emu:1; gradients are summed in a fixed order (the same bits every run);
checkpoints carry the owners' weights under the one-device names; misconfigured replicas are
errors naming file, section and key."""
import os

import numpy as np
import pytest

import convnet
from convnet.config import ConfigError, load_config
from convnet.gradcheck import net_grad_errors
from convnet.net import Net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
TINY_DATA = os.path.join(FIX, "tiny-data-2gpu.cfg")
TINY_HYBRID = os.path.join(FIX, "tiny-hybrid-2gpu.cfg")
DATA_PARAMS = os.path.join(FIX, "imagenet-params-data.cfg")
IMAGENET = {
    "2gpu-data": (os.path.join(FIX, "imagenet-2gpu-data.cfg"), DATA_PARAMS),
    "4gpu-data": (os.path.join(FIX, "imagenet-4gpu-data.cfg"), DATA_PARAMS),
    "4gpu-data-model": (os.path.join(FIX, "imagenet-4gpu-data-model.cfg"),
                        os.path.join(FIX, "imagenet-params-4gpu-data-model.cfg")),
}
TINY_IMAGE = (3, 12, 12)

needs_emu = pytest.mark.skipif("emu" not in convnet.backends(),
                               reason="convnet was built without the emulated backend")


def configs(path, params=None):
    """(the config as written, its one-device twin: no gpu= anywhere, no dropout)."""
    pair = []
    for strip in (False, True):
        cfg = load_config(path, params)
        for spec in cfg.layers:
            if strip:
                spec.values.pop("gpu", None)
            if spec.text("type").startswith("dropout"):
                spec.values["enable"] = ("false", path)
        pair.append(cfg)
    return pair


def batch_of(n, image=TINY_IMAGE, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal(image + (n,)).astype(np.float32)
    return images, (np.arange(n) * 7 % classes).astype(np.int32)


def sgd(net, images, labels, steps):
    return np.array([net.train_step(images, labels, step=s, epoch=0, progress=0.0)
                     ["logprob"]["logprob"] for s in range(steps)])


def assert_matches(actual, expected, rel, what):
    """|actual - expected| <= rel * (the largest |expected| entry of the tensor)."""
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert err <= rel * scale, f"{what}: max difference {err:.3g}, {rel:g} x {scale:.3g} allowed"


def twins(path, device, batch, image=TINY_IMAGE, params=None, seed=3):
    rep_cfg, one_cfg = configs(path, params)
    rep = Net(rep_cfg, image_shape=image, batch_size=batch, device=device, seed=seed)
    one = Net(one_cfg, image_shape=image, batch_size=batch, device=device, seed=seed)
    return rep, one


def assert_same_training(rep, one, n, steps=4, image=TINY_IMAGE, classes=10):
    images, labels = batch_of(n, image, classes)
    l_one, l_rep = sgd(one, images, labels, steps), sgd(rep, images, labels, steps)
    assert l_one[-1] < l_one[0]
    np.testing.assert_allclose(l_rep, l_one, rtol=1e-6)
    a, b = rep.state_arrays(), one.state_arrays()
    assert sorted(a) == sorted(b)  # the owners' weights under the one-device names
    for k in b:
        assert_matches(a[k], b[k], 1e-5, k)
    return l_rep


# -- the files -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(IMAGENET))
def test_imagenet_multi_device_files_load_unmodified(name, monkeypatch):
    monkeypatch.setenv("CONVNET_CPU_DEVICES", "4")  # four devices on any machine
    cfg = load_config(*IMAGENET[name])
    assert cfg.warnings == []
    # At 67x67, the smallest size these nets take (pool3 makes 1x1): quick to build.
    net = Net(cfg, image_shape=(3, 67, 67), batch_size=8, device="cpu")
    one = Net(configs(*IMAGENET[name])[1], image_shape=(3, 67, 67), batch_size=8)
    assert net.total_params == one.total_params
    assert sorted(net.state_arrays()) == sorted(one.state_arrays())
    replicas = 2 if name.startswith("2") else 4
    assert net.slices == replicas and net.replicas["conv1"] == tuple(range(replicas))
    assert net.by_name["pool3"].out_shape == (256, 1, 1)
    where = {L.name: L.device.index for L in net.instances}
    for k in range(1, replicas):  # the convolutions: slice k on device k
        assert where[f"conv5@{k}"] == where[f"data@{k}"] == k
    if name.endswith("model"):
        # fc1024b runs every slice on device 1; each pass layer gathers the four halves.
        assert {where["fc1024b"]} | {where[f"fc1024b@{k}"] for k in range(1, 4)} == {1}
        assert net.by_name["pass1c"].out_shape == (4096,)
        assert where["fc1000@3"] == where["logprob@3"] == where["labvec@3"] == 0
    else:
        assert where[f"fc1000@{replicas - 1}"] == replicas - 1


@pytest.mark.slow  # ~20 s on the shared 2-core machine
def test_imagenet_4gpu_data_model_trains_like_one_device(monkeypatch):
    # The hybrid at 67x67 (pool3 makes 1x1) on four logical CPU devices sharing two cores, 2
    # SGD steps of 8 images, against the same net on one device. Allowed: losses 1e-5 relative,
    # weights 1e-4 of each tensor's largest entry.
    monkeypatch.setenv("CONVNET_CPU_DEVICES", "4")
    rep, one = twins(*IMAGENET["4gpu-data-model"][:1], "cpu", 8, image=(3, 67, 67),
                     params=IMAGENET["4gpu-data-model"][1])
    images, labels = batch_of(8, (3, 67, 67), 1000)
    l_one, l_rep = sgd(one, images, labels, 2), sgd(rep, images, labels, 2)
    np.testing.assert_allclose(l_rep, l_one, rtol=1e-5)
    a, b = rep.state_arrays(), one.state_arrays()
    for k in b:
        assert_matches(a[k], b[k], 1e-4, k)


@pytest.mark.slow  # ~30 s on the shared 2-core machine
@needs_emu
def test_imagenet_2gpu_data_trains_on_two_emulated_devices():
    # The data-parallel file at 67x67 on emu:0 + emu:1, 2 SGD steps of 4 images, against the
    # same net without gpu= on the CPU. Measured: losses 8e-7 relative, weights 3.9e-6 of each
    # tensor's largest entry; allowed 1e-5 and 1e-4.
    path, params = IMAGENET["2gpu-data"]
    rep = twins(path, "emu:0", 4, image=(3, 67, 67), params=params)[0]
    one = twins(path, "cpu", 4, image=(3, 67, 67), params=params)[1]
    assert {str(d) for d in rep.devices} == {"emu:0", "emu:1"}
    images, labels = batch_of(4, (3, 67, 67), 1000)
    np.testing.assert_allclose(sgd(rep, images, labels, 2), sgd(one, images, labels, 2),
                               rtol=1e-5)
    a, b = rep.state_arrays(), one.state_arrays()
    for k in b:
        assert_matches(a[k], b[k], 1e-4, k)


# -- training like one device ----------------------------------------------------------------

@pytest.mark.parametrize("path", [TINY_DATA, TINY_HYBRID], ids=["data", "hybrid"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("emu:0", marks=needs_emu)])
@pytest.mark.parametrize("n", [8, 7])
def test_replicas_train_like_one_device(path, device, n):
    # 4 SGD steps of the two-replica nets (cpu + cpu:1, or emu:0 + emu:1) and of their
    # one-device twins from the same seed, on batches of 8 and 7 (slices of 3 and 4 images).
    # Measured: the same losses, weights within 2.2e-7 of each tensor's largest entry (float32
    # sums over the slices instead of over the batch); allowed 1e-6 and 1e-5.
    rep, one = twins(path, device, 8)
    kind = device.split(":")[0]
    assert {(d.type, d.index) for d in rep.devices} == {(kind, 0), (kind, 1)}
    assert rep.slices == 2
    assert_same_training(rep, one, n)


@needs_emu
def test_replicas_give_the_same_bits_in_every_stream_order():
    # The hybrid net on emu:0 + emu:1 with asynchronous, adversarial streams: every order
    # allowed by the events (gradient sums, their copies to the owner, the weights sent back)
    # gives the bits of the in-order run; a missing event would let a copy read a NaN-poisoned
    # or stale buffer.
    emu = convnet.device.module_for("emu")
    before = emu.stream_order()
    images, labels = batch_of(7)
    runs = {}
    try:
        for order in ("sync", "deferred", "reversed", "random:1", "random:2"):
            emu.set_stream_order(order)
            net = Net(configs(TINY_HYBRID)[0], image_shape=TINY_IMAGE, batch_size=8,
                      device="emu:0", seed=3)
            losses = sgd(net, images, labels, 3)
            runs[order] = (losses, net.state_arrays())
    finally:
        emu.set_stream_order(before)
    ref_losses, ref = runs["sync"]
    for order, (losses, arrays) in runs.items():
        assert np.array_equal(losses, ref_losses), order
        for k in ref:
            assert np.array_equal(arrays[k], ref[k]), (order, k)


@needs_emu
@pytest.mark.parametrize("label", ["reduce dconv1.w", "conv1.w -> emu:1"])
def test_a_missing_weight_event_is_caught(label):
    # The owner adds the other device's gradient sum before it has arrived, or the weights are
    # sent back before the update: under an adversarial order the run goes wrong. Which ready
    # stream runs first depends on the streams the process created before (test_executor.py), so
    # the bug must show in at least one of several adversarial orders.
    emu = convnet.device.module_for("emu")
    before = emu.stream_order()
    images, labels = batch_of(7)
    caught = []
    try:
        for order in ["deferred", "reversed"] + [f"random:{seed}" for seed in range(1, 5)]:
            runs = []
            for planted in (False, True):
                emu.set_stream_order(order)
                net = Net(configs(TINY_HYBRID)[0], image_shape=TINY_IMAGE, batch_size=8,
                          device="emu:0", seed=3)
                for task in net.tasks["backward"] + net.tasks["update"]:
                    if planted and task.label == label:
                        task.waits = []
                sgd(net, images, labels, 3)
                runs.append(net.state_arrays())
            if any(not np.array_equal(runs[0][k], runs[1][k]) for k in runs[0]):
                caught.append(order)
                break
    finally:
        emu.set_stream_order(before)
    assert caught, f"no adversarial stream order exposed the missing wait of {label!r}"


@pytest.mark.parametrize("path,enable", [(TINY_DATA, "true"), (TINY_HYBRID, "true"),
                                         (TINY_HYBRID, "false")])
def test_replicated_nets_pass_the_gradient_check(path, enable):
    # The whole-net finite-difference check (--check-grads) of the replicated nets on cpu +
    # cpu:1: a perturbed weight reaches every replica. With dropout2 disabled its forward pass
    # is the test-time one (x * keep), and so is its gradient. (Seed 1: with seed 0 some
    # images of the hybrid reach fc3 with all inputs dropped, a ReLU exactly at its kink.)
    cfg = load_config(path)
    for spec in cfg.layers:
        if spec.text("type").startswith("dropout"):
            spec.values["enable"] = (enable, path)
    net = Net(cfg, image_shape=TINY_IMAGE, batch_size=16, seed=1)
    images, labels = batch_of(16)
    errors = net_grad_errors(net, images, labels)
    assert len(errors) == len(net.trained)
    bad = {k: e for k, (e, _) in errors.items() if e >= 0.05}
    assert not bad, bad


def test_replicas_on_one_device_run_the_slices_in_turn():
    # single_device=True: both slices on one device (cuda-convnet2's passes), gradients summed
    # there; no transfer at all.
    rep_cfg, one_cfg = configs(TINY_HYBRID)
    rep = Net(rep_cfg, image_shape=TINY_IMAGE, batch_size=8, seed=3, single_device=True)
    one = Net(one_cfg, image_shape=TINY_IMAGE, batch_size=8, seed=3)
    assert rep.devices == one.devices and rep.slices == 2
    assert_same_training(rep, one, 8)
    assert rep.transfer_log == []


def test_replicated_training_is_deterministic():
    # The gradient sums run in a fixed order: two runs give the same bits.
    images, labels = batch_of(8)
    runs = []
    for _ in range(2):
        net = Net(configs(TINY_HYBRID)[0], image_shape=TINY_IMAGE, batch_size=8, seed=3)
        sgd(net, images, labels, 3)
        runs.append(net.state_arrays())
    for k in runs[0]:
        assert np.array_equal(runs[0][k], runs[1][k]), k


def test_dropout_masks_differ_between_slices():
    cfg = load_config(TINY_DATA)
    net = Net(cfg, image_shape=TINY_IMAGE, batch_size=8, seed=3)
    images, _ = batch_of(8)
    images = np.concatenate([images[..., :4]] * 2, axis=-1)  # both slices see the same images
    net.forward(images, np.zeros(8, np.int32), train=True, step=0)
    masks = [net.by_name[name].mask.view(4).numpy() for name in ("drop2", "drop2@1")]
    assert 0 < masks[0].mean() < 1 and not np.array_equal(masks[0], masks[1])


def test_weight_traffic_and_schedule():
    net = Net(configs(TINY_DATA)[0], image_shape=TINY_IMAGE, batch_size=8, seed=3)
    images, labels = batch_of(8)
    net.train_step(images, labels, step=0, epoch=0, progress=0.0)
    weights = sum(p.value.nbytes for p in net.trained)
    moved = {d: sum(t["bytes"] for t in net.transfer_log if t["direction"] == d)
             for d in ("grad", "weights")}
    # Every weight gradient goes once to the owner (cpu:0), every weight comes back once.
    assert moved == {"grad": weights, "weights": weights} == \
        {d: net.weight_transfer_bytes() // 2 for d in moved}
    assert {(t["from"], t["to"]) for t in net.transfer_log if t["direction"] == "grad"} == \
        {("cpu:1", "cpu")}
    tasks = net.schedule()
    assert "[compute] reduce dconv1.w" in tasks["cpu"]["backward"]
    assert "[copy] conv1.w -> cpu:1" in tasks["cpu"]["update"]
    assert "replicas: each batch cut into 2 slices" in net.table()


def test_output_joins_the_slices():
    rep, one = twins(TINY_HYBRID, "cpu", 8)
    images, labels = batch_of(5)
    s_rep = rep.forward(images, labels, train=False)["logprob"]
    s_one = one.forward(images, labels, train=False)["logprob"]
    for k in s_one:
        np.testing.assert_allclose(s_rep[k], s_one[k], rtol=1e-6)
    np.testing.assert_allclose(rep.output("probs"), one.output("probs"), rtol=1e-5, atol=1e-7)
    # A test batch smaller than the slices leaves one empty: still the right outputs.
    s_rep = rep.forward(images[..., :1], labels[:1], train=False)
    assert rep.output("probs").shape == (10, 1)
    with pytest.raises(ValueError, match="2 slices"):
        rep.train_step(images[..., :1], labels[:1], step=0, epoch=0, progress=0.0)


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value,section,words", [
    ("1,1", "fc3", "different devices"),
    ("0,1,2", "conv1", "2 replicas (0,1) do not divide the 3 of layer 'fc3'"),
    ("0,x", "fc3", "expected an integer"),
    ("0,5", "fc3", "cpu:5 does not exist"),
])
def test_bad_replica_lists_name_file_section_key(tmp_path, monkeypatch, value, section, words):
    monkeypatch.setenv("CONVNET_CPU_DEVICES", "4")  # cpu:5 past the end on any machine
    path = tmp_path / "net.cfg"
    text = open(TINY_DATA).read().replace("[fc3]\n", f"[fc3]\ngpu={value}\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        Net(load_config(str(path)), image_shape=TINY_IMAGE, batch_size=8)
    assert (e.value.file, e.value.section, e.value.key) == (str(path), section, "gpu")
    assert words in str(e.value)
