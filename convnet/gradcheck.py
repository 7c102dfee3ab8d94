"""Whole-net gradient check (``python -m convnet.train CONFIG --check-grads``), as cuda-convnet
had: backpropagated gradients of every parameter against central finite differences of the
cost, on one small batch, in the net's own float32 arithmetic.

For each parameter tensor, `samples` entries are perturbed by ±h and the error is measured over
the sampled entries as ||numerical - analytic|| / ||numerical|| (a norm-wise relative error,
robust to the few entries whose gradient is nearly zero). In float32 a large h meets the kinks of
ReLU and max pooling (units switching on or off) and a small one the rounding of the cost, so
several steps h are tried and the smallest error counts. An entry whose perturbation crosses a kink
at every step (its one-sided slopes (f(w+h) - f(w)) / h and (f(w) - f(w-h)) / h disagree by more
than a tenth of the largest slope sampled in the tensor, at every step where the cost's rounding
allows to tell: a unit switching closer to the current weight than the steps) has no derivative
to check: it is left out of the error and counted; a tensor with more than a quarter of its
entries left out fails. A wrong gradient (missing, mis-scaled, misrouted) has agreeing one-sided
slopes and is never left out. A tensor passes below `tolerance`: 5%, which a wiring mistake (a
gradient not summed, sent to the wrong layer, mis-scaled) exceeds by far; the ops themselves are
checked exactly against float64 references in their own tests.
Dropout draws the same mask in every evaluation (it depends on the step, not on a state).
"""
import numpy as np

from .config import ConfigError, load_config

__all__ = ["check_net_grads", "net_grad_errors"]

CHECK_DATA = "synthetic:size=16,train=64,test=16,classes=10"


def _cost(net, images, labels):
    stats = net.forward(images, labels, train=True, step=0)
    return sum(C.cfg["coeff"] * s["logprob"] for C, s in zip(net.costs, stats.values())) \
        / images.shape[-1]


STEPS = (1e-3, 3e-4, 1e-4, 3e-5)


def net_grad_errors(net, images, labels, samples=12, seed=0, steps=STEPS):
    """{param name: (relative error, entries checked)} for every trained parameter; entries at a
    kink (see the module's docstring) are not counted in either."""
    rng = np.random.default_rng(seed)
    net.forward(images, labels, train=True, step=0)
    net.backward()
    analytic = {p.full_name: p.grad.numpy().copy() for p in net.params}
    base = _cost(net, images, labels)
    out = {}
    for p in net.params:
        w = p.value.numpy().copy()
        flat = w.reshape(-1)
        idx = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
        ana = analytic[p.full_name].reshape(-1)[idx].astype(np.float64)
        # costs[s, j, side]: the cost with entry j moved by +h (side 0) and -h (side 1).
        costs = np.empty((len(steps), len(idx), 2))
        for s, h in enumerate(steps):
            for j, i in enumerate(idx):
                for side, sign in enumerate((1, -1)):
                    pert = flat.copy()
                    pert[i] += sign * h
                    _set(net, p, pert.reshape(w.shape))
                    costs[s, j, side] = _cost(net, images, labels)
        _set(net, p, w)
        h = np.asarray(steps, dtype=np.float64)[:, None]
        central = (costs[..., 0] - costs[..., 1]) / (2 * h)
        kink = _at_kink(costs, base, h, central)
        keep = ~kink
        if kink.sum() * 4 > len(idx):
            out[p.full_name] = (np.inf, int(keep.sum()))
            continue
        best = np.inf
        for num in central[:, keep]:
            denom = np.linalg.norm(num)
            err = np.linalg.norm(num - ana[keep]) / denom if denom > 0 \
                else np.linalg.norm(ana[keep])
            best = min(best, float(err))
        out[p.full_name] = (best, int(keep.sum()))
    return out


def _at_kink(costs, base, h, central):
    """The entries whose one-sided slopes disagree by more than a tenth of the tensor's largest
    slope (of the central differences at the largest step) at every step where that
    much disagreement stands above the cost's float32 rounding: a kink closer than every step
    tried. Where no step is that precise, nothing is called a kink."""
    right = (costs[..., 0] - base) / h
    left = (base - costs[..., 1]) / h
    typical = np.max(np.abs(central[0]))
    rounding = np.finfo(np.float32).eps * abs(base) / h[:, 0]
    precise = rounding < 0.1 * typical
    if not precise.any():
        return np.zeros(costs.shape[1], dtype=bool)
    return np.all(np.abs(right - left)[precise] > 0.1 * typical, axis=0)


def _set(net, p, a):
    """Sets a weight tensor, on every device holding a replica of its layer."""
    from .tensor import from_numpy
    p.value.copy_(from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    net.broadcast_weights()


def check_net_grads(args, tolerance=0.05, out=print):
    """The --check-grads command: builds the net on a small batch and prints one line per
    parameter tensor; returns True when every tensor passes."""
    from . import data as data_mod
    from .net import Net
    cfg = load_config(args.config, args.layer_params)
    spec = args.data or CHECK_DATA
    ds = data_mod.open_source(spec, workers=0, color_noise=0.0, flip=False)
    batch = min(args.batch_size, 16)
    images, labels = next(iter(ds.test_batches(batch)))
    images, labels = images.copy(), labels.copy()
    net = Net(cfg, image_shape=ds.image_shape, device=args.device, batch_size=batch,
              seed=args.seed)
    for cost in net.costs:
        if cost.classes < ds.num_classes:
            raise ConfigError(f"{cost.inputs[1].name!r} has {cost.classes} outputs but the "
                              f"data source has {ds.num_classes} classes", cfg.def_path,
                              cost.name, "inputs")
    out(f"gradient check of {args.config} on {images.shape[-1]} images of {spec} "
        f"({args.device}); tolerance {tolerance:.0%} (norm-wise relative error)")
    ok = True
    for name, (err, k) in net_grad_errors(net, images, labels).items():
        good = err < tolerance
        ok &= good
        out(f"  {name:>16}  {k:3d} entries  error {err:.2e}  {'ok' if good else 'FAIL'}")
    out("gradient check " + ("passed" if ok else "FAILED"))
    return ok
