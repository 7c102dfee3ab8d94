"""Export a trained net: ``python -m convnet.export CHECKPOINT --to numpy|torch|onnx OUT``.

* ``numpy``: one ``.npz`` (no pickle) with the weights under convnet's names and layouts
  (``L.w`` (C/groups, fs, fs, F) for a conv layer, (inputs, outputs) for an fc layer, ``L.w0``,
  ``L.w1``, ... for a layer with several inputs, ``L.b`` (F,)), the mean image
  ``inference.mean`` (H, W, 3), and ``net.json``: a JSON text (a 0-d unicode array) with the
  config, sizes, class ids and names, the output layer and each array's layout. It loads back
  with ``convnet.inference.Model.load(OUT.npz)`` and in ``convnet.predict``.
* ``torch``: a directory with ``model.py`` (the ``nn.Module`` source; needs only torch) and
  ``state_dict.pt`` (``torch.load`` it with ``weights_only=True``); see export.torch_source.
* ``onnx``: one ``.onnx`` file built with the ``onnx`` package; see export.onnx_model.
"""
import json
import os

import numpy as np

from ..checkpoint import CheckpointError
from ..inference import MEAN_ARRAY, record
from .graph import inference_graph

__all__ = ["export", "export_numpy", "export_torch", "export_onnx", "read_numpy", "FORMATS",
           "main"]

FORMATS = ("numpy", "torch", "onnx")
NUMPY_FORMAT = "convnet-export-1"
TORCH_INSTALL = "pip install torch==2.13.0"


def _mean_crop(info):
    """The centre crop x crop of the mean image, (3, crop, crop): what every view has subtracted."""
    h, w = info.image_size
    c = info.crop
    y0, x0 = (h - c) // 2, (w - c) // 2
    return np.ascontiguousarray(info.mean[y0:y0 + c, x0:x0 + c].transpose(2, 0, 1))


def _layouts(net):
    out = {}
    for p in net.params:
        L = p.layer
        if p.name == "b":
            out[p.full_name] = "(F,) one per output"
        elif L.TYPE == "conv":
            out[p.full_name] = "(C/groups, fs, fs, F): input channel, row, column, filter"
        else:
            out[p.full_name] = "(I, O): input feature (C, H, W order), output"
    out[MEAN_ARRAY] = "(H, W, 3) float32, 0..255: the mean training image"
    return out


def export_numpy(model, out):
    """Writes the .npz of the module docstring; returns its path."""
    meta, arrays = record(model.info)
    net = model.net
    doc = {"format": NUMPY_FORMAT, "def_path": model.meta.get("def_path"),
           "def_text": model.meta.get("def_text"), "params_path": model.meta.get("params_path"),
           "params_text": model.meta.get("params_text"), "inference": meta,
           "output": model.probs_layer,
           "layers": [{"name": L.name, "type": L.TYPE, "inputs": L.input_names,
                       "shape": list(L.out_shape or ())} for L in net.order],
           "arrays": _layouts(net)}
    arrays = {**arrays, **{p.full_name: p.value.numpy() for p in net.params}}
    with open(out, "wb") as f:
        np.savez(f, **arrays, **{"net.json": np.array(json.dumps(doc))})
    return out


def read_numpy(path):
    """(meta, arrays) of a numpy export, shaped as a checkpoint's for Model."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if "net.json" not in arrays:
        raise CheckpointError(f"{path}: not a convnet export (no net.json array)")
    doc = json.loads(str(arrays.pop("net.json")))
    if doc.get("format") != NUMPY_FORMAT:
        raise CheckpointError(f"{path}: export format {doc.get('format')!r}, expected "
                              f"{NUMPY_FORMAT!r}")
    doc["path"] = path
    return doc, arrays


def _title(model):
    return f"convnet net {os.path.basename(model.meta.get('def_path') or 'net')}"


def export_torch(model, out):
    """Writes OUT/model.py and OUT/state_dict.pt; returns OUT."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"--to torch needs PyTorch ({TORCH_INSTALL})") from None
    from .torch_source import module_source, state_arrays
    nodes = inference_graph(model.net, model.probs_layer)
    os.makedirs(out, exist_ok=True)
    src = module_source(nodes, title=_title(model), source=model.meta.get("path"),
                        crop=model.info.crop, classes=model.info.class_names)
    with open(os.path.join(out, "model.py"), "w", encoding="utf-8") as f:
        f.write(src)
    state = {k: torch.from_numpy(np.array(v)) for k, v in
             state_arrays(nodes, _mean_crop(model.info)).items()}
    torch.save(state, os.path.join(out, "state_dict.pt"))
    return out


def export_onnx(model, out):
    """Writes the .onnx file; returns its path."""
    try:
        import onnx
    except ImportError:
        raise CheckpointError("--to onnx needs the onnx package (pip install onnx)") from None
    from .onnx_model import onnx_model
    nodes = inference_graph(model.net, model.probs_layer)
    proto = onnx_model(nodes, mean_crop=_mean_crop(model.info), title=_title(model),
                       classes=model.info.class_names)
    onnx.save(proto, out)
    return out


def export(checkpoint, to, out, *, data=None, say=None):
    """Exports a checkpoint (or a numpy export) in format `to`; returns what was written."""
    from ..inference import Model
    if to not in FORMATS:
        raise ValueError(f"unknown export format {to!r}; one of {', '.join(FORMATS)}")
    model = Model.load(checkpoint, data=data, batch_images=1, views=1, say=say)
    return {"numpy": export_numpy, "torch": export_torch, "onnx": export_onnx}[to](model, out)


def main(argv=None):
    """The command line; returns the exit code (2: a user mistake, as one line)."""
    import sys
    from ..cli import Parser, UserError, error_prefix, prog_name
    from ..config import ConfigError
    from ..data import DataError
    from ..inference import say_stderr
    prog = prog_name("convnet.export", "convnet-export")
    p = Parser(prog=prog, description="Export a trained net's weights, as numpy arrays, a "
                                      "PyTorch module, or an ONNX model.")
    p.add_argument("checkpoint", help="a run directory (its latest checkpoint), a ckpt-*.json, "
                                      "or a numpy export")
    p.add_argument("--to", required=True, choices=FORMATS, help="the format")
    p.add_argument("out", help="numpy: the .npz file; torch: a directory (model.py, "
                               "state_dict.pt); onnx: the .onnx file")
    p.add_argument("--data", metavar="SPEC",
                   help="the data source the net was trained on: only needed for a checkpoint "
                        "written before checkpoints held the mean image and class names")
    args = p.parse_args(argv)
    try:
        parent = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise UserError(f"{args.out}: cannot write there")
        done = export(args.checkpoint, args.to, args.out, data=args.data, say=say_stderr)
    except (CheckpointError, ConfigError, DataError, UserError) as e:
        print(f"{error_prefix(prog)} {e}", file=sys.stderr)
        return 2
    print(f"wrote {done}")
    return 0
