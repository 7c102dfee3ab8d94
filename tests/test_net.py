"""The layer graph: whole-net gradients, gradient sums over consumers, batch prefixes,
reproducible init, cpu vs emulated GPU, and layers spread over two (emulated) devices."""
import os

import numpy as np
import pytest

import convnet
from convnet import data
from convnet.config import load_config
from convnet.gradcheck import CHECK_DATA, net_grad_errors
from convnet.net import Net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
TOWERS = os.path.join(ROOT, "layers", "tiny-towers.cfg")

# cpu vs emu after 5 SGD steps: the two backends sum in different orders (the emulated kernels
# use other tilings), so losses agree to float32 rounding amplified by 5 steps: relative
# differences of at most 6e-8 were measured; the tolerance leaves room for other machines.
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def batch():
    ds = data.open_source(CHECK_DATA, workers=0, color_noise=0.0, flip=False)
    images, labels = next(iter(ds.test_batches(16)))
    return images.copy(), labels.copy()


def has_emu():
    return "emu" in convnet.backends()


def make(cfg, device="cpu", batch_size=16, seed=0, single_device=False):
    return Net(load_config(cfg), image_shape=(3, 16, 16), device=device, batch_size=batch_size,
               seed=seed, single_device=single_device)


@pytest.mark.parametrize("cfg", [TINY, TOWERS], ids=["tiny", "towers"])
def test_whole_net_gradients(cfg, batch):
    net = make(cfg)
    errors = net_grad_errors(net, *batch, samples=4, steps=(1e-3, 1e-4))
    assert len(errors) == len(net.params)
    bad = {k: v for k, v in errors.items() if v[0] > 0.05}
    assert not bad, bad


def test_gradient_check_skips_kinks_but_not_wrong_gradients():
    # _at_kink sees only costs: f(w) = |w - 1e-5| + 2 w (a kink closer than every step) at entry
    # 0, and smooth 3 w, 0.5 w^2 at entries 1, 2.
    from convnet.gradcheck import _at_kink
    steps = np.array([1e-3, 1e-4])[:, None]
    w = np.array([0.0, 0.3, 0.7])
    f = [lambda v: abs(v - 1e-5) + 2 * v, lambda v: 3 * v, lambda v: 0.5 * v * v]
    costs = np.array([[[f[j](w[j] + h), f[j](w[j] - h)] for j in range(3)] for h in steps[:, 0]])
    # The cost is the sum of the three; each entry is perturbed alone.
    base = sum(fj(wj) for fj, wj in zip(f, w))
    costs += np.array([base - f[j](w[j]) for j in range(3)])[None, :, None]
    central = (costs[..., 0] - costs[..., 1]) / (2 * steps)
    assert list(_at_kink(costs, base, steps, central)) == [True, False, False]


def test_gradient_check_fails_a_mis_scaled_gradient(batch, monkeypatch):
    # A wrong gradient is not hidden by the kink rule: conv1's weight gradient scaled by 1.3.
    net = make(TINY)
    backward = net.backward

    def wrong_backward():
        backward()
        p = next(p for p in net.params if p.full_name.startswith("conv1.w"))
        p.grad.copy_(convnet.from_numpy(p.grad.numpy() * np.float32(1.3)))
    monkeypatch.setattr(net, "backward", wrong_backward)
    errors = net_grad_errors(net, *batch, samples=4, steps=(1e-3, 1e-4))
    conv1 = {k: v for k, v in errors.items() if k.startswith("conv1.w")}
    assert conv1 and all(e > 0.2 and n >= 3 for e, n in conv1.values()), conv1
    assert all(e < 0.05 for k, (e, n) in errors.items() if k not in conv1), errors


def test_consumers_gradients_are_summed(batch):
    # pool1 feeds conv2a and conv2b; conv2a feeds sum2 and cat2: their gradients must add up.
    net = make(TOWERS)
    edges = {L: [(e.target.name, e.accumulate) for e in es if e is not None]
             for L, es in net.edges.items()}
    into_pool1 = [acc for es in edges.values() for (t, acc) in es if t == "pool1"]
    into_conv2a = [acc for es in edges.values() for (t, acc) in es if t == "conv2a"]
    assert sorted(into_pool1) == [False, True] and sorted(into_conv2a) == [False, True]
    # fc4's gradient w.r.t. drop3 is fused with the cost; conv1's input gradient is not needed.
    assert edges["conv1"] == [] and edges["logprob"] == [("fc4", False)]


def test_smaller_batch_uses_a_prefix_of_the_buffers(batch):
    images, labels = batch
    big = make(TOWERS, batch_size=16)
    small = make(TOWERS, batch_size=5)
    a = big.forward(images[..., :5].copy(), labels[:5].copy(), train=True, step=3)
    b = small.forward(images[..., :5].copy(), labels[:5].copy(), train=True, step=3)
    assert a == b
    np.testing.assert_array_equal(big.output("probs"), small.output("probs"))
    with pytest.raises(ValueError, match="built for at most 5"):
        small.forward(images, labels, train=False)


def test_init_is_reproducible_and_as_configured():
    a, b, c = make(TINY, seed=3), make(TINY, seed=3), make(TINY, seed=4)
    sa, sb, sc = a.state_arrays(), b.state_arrays(), c.state_arrays()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert not np.array_equal(sa["conv1.w"], sc["conv1.w"])
    w = sa["fc2.w"]
    assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001
    assert (sa["conv1.b"] == 0).all() and (sa["fc2.w.inc"] == 0).all()
    towers = make(TOWERS)
    assert (towers.state_arrays()["conv1.b"] == np.float32(0.1)).all()


def losses(net, images, labels, steps=5):
    out = []
    for s in range(steps):
        st = net.train_step(images, labels, step=s, epoch=0, progress=s / steps)
        out.append(st["logprob"]["logprob"])  # cost layer "logprob": summed -log p
    return np.array(out)


@pytest.mark.skipif(not has_emu(), reason="convnet was built without the emulated backend")
def test_cpu_and_emu_give_the_same_losses(batch):
    images, labels = batch
    cpu, emu = make(TINY), make(TINY, device="emu:0")
    for k, v in cpu.state_arrays().items():  # the same initial weights on every backend
        np.testing.assert_array_equal(v, emu.state_arrays()[k])
    lc, le = losses(cpu, images, labels), losses(emu, images, labels)
    assert lc[-1] < lc[0]
    np.testing.assert_allclose(le, lc, rtol=LOSS_RTOL)


@pytest.mark.skipif(not has_emu(), reason="convnet was built without the emulated backend")
def test_two_devices_match_one_cpu(batch):
    images, labels = batch
    cpu = make(TOWERS, single_device=True)
    two = make(TOWERS, device="emu:0")
    assert {str(d) for d in two.devices} == {"emu:0", "emu:1"} and len(cpu.devices) == 1
    assert two.by_name["conv2b"].device == "emu:1" and two.by_name["fc4"].device == "emu:0"
    # Activations crossing devices have buffers on the consumer's device.
    assert ("pool1", convnet.Device("emu:1")) in two.remote
    assert ("drop3", convnet.Device("emu:0")) in two.remote
    np.testing.assert_allclose(losses(two, images, labels), losses(cpu, images, labels),
                               rtol=LOSS_RTOL)
    sc, st = cpu.state_arrays(), two.state_arrays()
    for k in sc:
        np.testing.assert_allclose(st[k], sc[k], rtol=1e-3, atol=1e-6, err_msg=k)


def test_wrong_device_is_reported():
    with pytest.raises(convnet.DeviceError, match="cuda"):
        make(TINY, device="cuda:0") if not convnet.cuda.is_available() else \
            make(TINY, device="cuda:99")
    with pytest.raises(ValueError, match="unknown device"):
        make(TINY, device="gpu:0")
