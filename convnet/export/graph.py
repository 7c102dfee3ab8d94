"""A built net as an inference graph for the exporters: one node per layer, in running order,
with the geometry other frameworks need worked out once here.

Every tensor is in the layout of PyTorch and ONNX: images (N, C, H, W), vectors (N, F).
cuda-convnet's output sizes round up (``1 + ceil((2·padding + img − fs) / stride)``), so the last
window of a conv or pool may hang over the far edge, where the image reads as zero (conv) or is
left out (pool). A framework that rounds down reproduces that with asymmetric padding: ``pads``
is (top, left, bottom, right), the bottom/right pads including the overhang.

Nodes (dicts): name, op, inputs (node names), shape (per image), neuron (kind, a, b) or None, and
  input    the images (op of the data layer)
  conv     per input: weight (F, C/groups, fs, fs), stride, pads, groups; bias (F,)
  fc       per input: weight (O, I) of the flattened input; bias (O,)
  pool     mode max|avg, size, stride, pads (the first window starts at -start); a max window
           ignores what hangs over, an average divides by the pixels inside the image
  cmrnorm  across channels: band (C, C) 0/1, band[c, c'] = 1 when c' is in c's window (within
           c's group); y = x · (k + alpha · band @ x²)^(−beta)
  rnorm    same map: size x size window at offset −size//2, pads; y = x · (k + alpha · Σ x²)^(−beta)
  scale    y = factor · x (dropout at test time: 1 for dropout, keep for dropout2)
  neuron   y = f(x)
  eltsum   y = Σ coeffs[i] · x_i
  concat   along the channels (axis 1)
  softmax  over axis 1: the class probabilities
Weights are numpy float32, biases as one would pass them to conv2d / linear.
"""
import numpy as np

__all__ = ["inference_graph", "round_up_pads"]


def round_up_pads(img, fs, padding, stride, out):
    """(before, after) padding of one axis so that a round-down framework makes `out` outputs:
    after = the padding plus the last window's overhang."""
    return padding, (out - 1) * stride + fs - img - padding


def _conv_node(L):
    inputs = []
    for i, (shape, w) in enumerate(zip(L.in_shapes, L.ws)):
        c = {k: L.cfg[k][i] for k in ("filterSize", "padding", "stride", "groups")}
        ph = round_up_pads(shape[1], c["filterSize"], c["padding"], c["stride"], L.out_shape[1])
        pw = round_up_pads(shape[2], c["filterSize"], c["padding"], c["stride"], L.out_shape[2])
        inputs.append({"weight": np.ascontiguousarray(w.value.numpy().transpose(3, 0, 1, 2)),
                       "stride": c["stride"], "groups": c["groups"],
                       "pads": (ph[0], pw[0], ph[1], pw[1])})
    return {"per_input": inputs, "bias": L.b.value.numpy().copy()}


def _fc_node(L):
    return {"per_input": [{"weight": np.ascontiguousarray(w.value.numpy().T)} for w in L.ws],
            "bias": L.b.value.numpy().copy()}


def _pool_node(L):
    c = L.cfg
    _, h, w = L.in_shapes[0]
    _, ho, wo = L.out_shape
    size, stride, start = c["sizeX"], c["stride"], c["start"]
    # Window o covers [start + o·stride, + size), clipped to the image (start <= 0).
    eh = max(0, start + (ho - 1) * stride + size - h)
    ew = max(0, start + (wo - 1) * stride + size - w)
    return {"mode": c["pool"], "size": size, "stride": stride, "pads": (-start, -start, eh, ew)}


def _cmrnorm_node(L):
    c = L.cfg
    ch, size, groups = L.out_shape[0], c["size"], c["groups"]
    per = ch // groups
    band = np.zeros((ch, ch), np.float32)
    for o in range(ch):
        g0 = o // per * per
        first = o - size // 2
        band[o, max(g0, first):min(g0 + per, first + size)] = 1.0
    return {"band": band, "size": size, "groups": groups, "k": c["minDiv"],
            "alpha": c["scale"] / size, "beta": c["pow"]}


def _rnorm_node(L):
    c = L.cfg
    size = c["size"]
    before, after = size // 2, size - 1 - size // 2
    return {"size": size, "pads": (before, before, after, after), "k": c["minDiv"],
            "alpha": c["scale"] / size ** 2, "beta": c["pow"]}


def _node(L):
    t = L.TYPE
    if t == "conv":
        return "conv", _conv_node(L)
    if t == "fc":
        return "fc", _fc_node(L)
    if t == "pool":
        return "pool", _pool_node(L)
    if t == "cmrnorm":
        return "cmrnorm", _cmrnorm_node(L)
    if t == "rnorm":
        return "rnorm", _rnorm_node(L)
    if t == "dropout":
        return "scale", {"factor": 1.0}
    if t == "dropout2":   # the paper's dropout multiplies by keep at test time
        return "scale", {"factor": L.cfg["keep"]}
    if t == "neuron":
        return "neuron", {"kind": L.kind}
    if t == "eltsum":
        return "eltsum", {"coeffs": list(L.coeffs)}
    if t in ("concat", "softmax"):
        return t, {}
    raise ValueError(f"layer {L.name!r}: type {t!r} has no export")


def inference_graph(net, output):
    """The nodes computing layer `output` (a softmax) from the images, in running order."""
    needed, stack = set(), [net.by_name[output]]
    while stack:
        L = stack.pop()
        if L.name not in needed:
            needed.add(L.name)
            stack += L.inputs
    nodes = []
    for L in net.order:
        if L.name not in needed:
            continue
        if L.is_data:
            nodes.append({"name": L.name, "op": "input", "inputs": [], "shape": L.out_shape,
                          "neuron": None})
            continue
        op, attrs = _node(L)
        nodes.append({"name": L.name, "op": op, "inputs": [P.name for P in L.inputs],
                      "shape": L.out_shape, "neuron": L.neuron, **attrs})
    return nodes
