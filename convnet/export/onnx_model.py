"""The ONNX export, built node by node with the ``onnx`` package (opset 13) from the inference
graph (convnet.export.graph): input ``images`` (N, 3, crop, crop) float32, RGB 0..255, not
mean-subtracted; output ``probs`` (N, classes). Conv and pooling take cuda-convnet's round-up
sizes as asymmetric ``pads``; an average pool leaves the padding out of its count
(``count_include_pad=0``), as cuda-convnet divides by the pixels inside the image; the
normalisations are written out (square, a 1x1 or depthwise convolution summing the window, scale,
power), so every window size is exact, even ones ONNX's LRN centres differently."""
import numpy as np

__all__ = ["OPSET", "onnx_model"]

OPSET = 13


class _Builder:
    def __init__(self, onnx):
        self.onnx, self.h = onnx, onnx.helper
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name, array):
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value):
        self.count += 1
        return self.const(f"const_{self.count}", np.array(value, np.float32))

    def op(self, kind, inputs, out=None, **attrs):
        self.count += 1
        out = out or f"t_{self.count}"
        self.nodes.append(self.h.make_node(kind, list(inputs), [out], **attrs))
        return out


def _neuron(b, neuron, x):
    if neuron is None:
        return x
    kind, p, q = neuron
    if kind == "ident":
        return x
    if kind == "relu":
        return b.op("Relu", [x])
    if kind == "logistic":
        return b.op("Sigmoid", [x])
    if kind == "tanh":
        return b.op("Mul", [b.op("Tanh", [b.op("Mul", [x, b.scalar(q)])]), b.scalar(p)])
    if kind == "brelu":
        return b.op("Clip", [x, b.scalar(0.0), b.scalar(p)])
    if kind == "softrelu":
        return b.op("Softplus", [x])
    if kind == "abs":
        return b.op("Abs", [x])
    if kind == "square":
        return b.op("Mul", [x, x])
    if kind == "sqrt":
        return b.op("Sqrt", [x])
    if kind == "linear":
        return b.op("Add", [b.op("Mul", [x, b.scalar(p)]), b.scalar(q)])
    raise ValueError(f"no ONNX form for neuron {kind!r}")


def _norm(b, x, sums, n):
    """x * (k + alpha * sums)^-beta."""
    d = b.op("Add", [b.op("Mul", [sums, b.scalar(n["alpha"])]), b.scalar(n["k"])])
    return b.op("Mul", [x, b.op("Pow", [d, b.scalar(-n["beta"])])])


def _node(b, n, xs):
    op, name = n["op"], n["name"]
    if op == "conv":
        terms = []
        for i, (x, p) in enumerate(zip(xs, n["per_input"])):
            ins = [x, b.const(f"{name}.weight{i}", p["weight"])]
            if i == 0:
                ins.append(b.const(f"{name}.bias", n["bias"]))
            fs = p["weight"].shape[2]
            terms.append(b.op("Conv", ins, kernel_shape=[fs, fs], strides=[p["stride"]] * 2,
                              pads=list(p["pads"]), group=p["groups"]))
        return _sum(b, terms)
    if op == "fc":
        terms = []
        for i, (x, p) in enumerate(zip(xs, n["per_input"])):
            ins = [b.op("Flatten", [x], axis=1), b.const(f"{name}.weight{i}", p["weight"])]
            if i == 0:
                ins.append(b.const(f"{name}.bias", n["bias"]))
            terms.append(b.op("Gemm", ins, transB=1))
        return _sum(b, terms)
    x = xs[0]
    if op == "pool":
        attrs = dict(kernel_shape=[n["size"]] * 2, strides=[n["stride"]] * 2,
                     pads=list(n["pads"]))
        if n["mode"] == "max":
            return b.op("MaxPool", [x], **attrs)
        return b.op("AveragePool", [x], count_include_pad=0, **attrs)
    if op == "cmrnorm":
        band = n["band"][:, :, None, None]
        sums = b.op("Conv", [b.op("Mul", [x, x]), b.const(f"{name}.band", band)],
                    kernel_shape=[1, 1])
        return _norm(b, x, sums, n)
    if op == "rnorm":
        c, s = n["shape"][0], n["size"]
        box = np.ones((c, 1, s, s), np.float32)
        sums = b.op("Conv", [b.op("Mul", [x, x]), b.const(f"{name}.box", box)],
                    kernel_shape=[s, s], pads=list(n["pads"]), group=c)
        return _norm(b, x, sums, n)
    if op == "scale":
        return x if n["factor"] == 1.0 else b.op("Mul", [x, b.scalar(n["factor"])])
    if op == "neuron":
        return _neuron(b, n["kind"], x)
    if op == "eltsum":
        return _sum(b, [b.op("Mul", [x, b.scalar(c)]) for c, x in zip(n["coeffs"], xs)])
    if op == "concat":
        return b.op("Concat", xs, axis=1)
    if op == "softmax":
        return b.op("Softmax", [x], axis=1)
    raise ValueError(f"no ONNX form for op {op!r}")


def _sum(b, terms):
    out = terms[0]
    for t in terms[1:]:
        out = b.op("Add", [out, t])
    return out


def onnx_model(nodes, *, mean_crop, title, classes):
    """An onnx.ModelProto computing the probabilities of `nodes` (the last node's output);
    `classes` names the labels (the net may have more outputs than the data had labels)."""
    import onnx
    b = _Builder(onnx)
    crop = mean_crop.shape[1]
    values = {}
    for n in nodes:
        if n["op"] == "input":
            values[n["name"]] = b.op("Sub", ["images", b.const("mean", mean_crop[None].astype(np.float32))])
            continue
        y = _node(b, n, [values[i] for i in n["inputs"]])
        values[n["name"]] = _neuron(b, n["neuron"], y)
    b.nodes.append(b.h.make_node("Identity", [values[nodes[-1]["name"]]], ["probs"]))
    f32 = onnx.TensorProto.FLOAT
    graph = b.h.make_graph(
        b.nodes, title,
        [b.h.make_tensor_value_info("images", f32, ["N", 3, crop, crop])],
        [b.h.make_tensor_value_info("probs", f32, ["N", nodes[-1]["shape"][0]])], b.inits)
    model = b.h.make_model(graph, opset_imports=[b.h.make_opsetid("", OPSET)],
                           producer_name="convnet")
    model.ir_version = min(model.ir_version, 8)   # readable by onnxruntime releases since 1.14
    b.h.set_model_props(model, {"classes": "\n".join(map(str, classes))})
    onnx.checker.check_model(model)
    return model
