"""Classify image files with a trained net: ``python -m convnet.predict CHECKPOINT IMAGE|DIR ...``.

Images are decoded and preprocessed exactly as the test path does (convnet.inference.Model):
resized to the stored image size, then the centre crop (``--views 1``) or the paper's 10 views
(four corners and the centre, each mirrored; their softmax outputs averaged), minus the mean
image stored in the checkpoint. Unreadable images are listed and skipped.
"""
import json
import os
import sys

import numpy as np

from .checkpoint import CheckpointError
from .cli import Parser, UserError, check_environment, error_prefix, int_at_least, prog_name
from .config import ConfigError
from .device import DeviceError, backend
from .inference import Model, say_stderr, top_k

__all__ = ["main", "predict", "image_paths"]


def parse_args(argv=None):
    p = Parser(prog=prog_name("convnet.predict", "convnet-predict"),
               description="Print the most probable classes of images under a trained net.")
    p.add_argument("checkpoint", help="a run directory (its latest checkpoint) or a ckpt-*.json")
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR",
                   help="image files, or directories (their image files, sorted, recursively)")
    p.add_argument("--top", type=int_at_least(1), default=5, metavar="K",
                   help="classes to print per image (default: 5)")
    p.add_argument("--views", type=int, choices=(1, 10), default=1,
                   help="1: the centre crop (default); 10: the paper's 10 views, averaged")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda:N or emu:N")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--features", nargs=2, metavar=("LAYER", "OUT.npy"),
                   help="also write LAYER's outputs for the images read, in the order printed: "
                        "(images, *shape) float32, (images, 10, *shape) with --views 10")
    p.add_argument("--data", metavar="SPEC",
                   help="the data source the net was trained on: only needed for a checkpoint "
                        "written before checkpoints held the mean image and class names")
    p.add_argument("--batch", type=int_at_least(1), default=8, metavar="N",
                   help="images per forward pass (default: 8)")
    return p.parse_args(argv)


def image_paths(inputs):
    """Files named, and the image files under directories named (sorted, recursively); a path
    that does not exist is returned too (reported as unreadable)."""
    from .data.images import is_image_file
    out = []
    for arg in inputs:
        if os.path.isdir(arg):
            for root, dirs, files in os.walk(arg):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if is_image_file(f)]
        else:
            out.append(arg)
    return out


def predict(checkpoint, inputs, *, top=5, views=1, device="cpu", features=None, data=None,
            batch=8, say=say_stderr, model=None):
    """Classifies image files. Returns {"checkpoint", "views", "results": [{"path", "top":
    [{"label", "id", "name", "probability"}]}], "skipped": [{"path", "reason"}]}; with
    features=(LAYER, OUT.npy) also writes that layer's outputs (see --features)."""
    m = model or Model.load(checkpoint, device=device, data=data, batch_images=batch,
                            views=views, say=say)
    if features and features[0] not in m.layer_names():
        raise UserError(f"--features: no layer named {features[0]!r} with an output; layers: "
                        + ", ".join(m.layer_names()))
    paths = image_paths(inputs)
    results, skipped, feats = [], [], []
    layers = (features[0],) if features else ()
    for lo in range(0, len(paths), batch):
        chunk = paths[lo:lo + batch]
        present = [p for p in chunk if os.path.isfile(p)]
        skipped += [{"path": p, "reason": "no such file"} for p in chunk if p not in present]
        if not present:
            continue
        images, kept, bad = m.prepare(present, views)
        skipped += [{"path": p, "reason": r} for p, r in bad]
        if not kept:
            continue
        probs, outs = m.probabilities(images, views, layers)
        for j, path in enumerate(kept):
            best = top_k(probs[:, j:j + 1], top)[:, 0]
            results.append({"path": path, "top": [
                {"label": int(k), "id": m.info.label_id(k), "name": m.info.label_name(k),
                 "probability": float(probs[k, j])} for k in best]})
        if layers:
            y = outs[features[0]]                                   # (*shape, views * B)
            y = np.moveaxis(y.reshape(y.shape[:-1] + (views, len(kept))), (-1, -2), (0, 1))
            feats.append(y[:, 0] if views == 1 else y)
    if features:
        shape = tuple(m.net.by_name[features[0]].out_shape)
        arr = (np.concatenate(feats) if feats else
               np.zeros((0,) + ((10,) if views == 10 else ()) + shape, np.float32))
        np.save(features[1], arr.astype(np.float32))
    return {"checkpoint": m.meta.get("path", checkpoint), "views": views,
            "results": results, "skipped": skipped,
            **({"features": {"layer": features[0], "path": features[1]}} if features else {})}


def format_text(res):
    lines = []
    for r in res["results"]:
        lines.append(r["path"])
        for t in r["top"]:
            ident = f"  {t['id']}" if t["id"] != t["name"] else ""
            lines.append(f"  {t['probability']:7.4f}{ident}  {t['name']}")
    if res["skipped"]:
        n = len(res["skipped"])
        lines.append(f"skipped {n} unreadable image{'s' if n > 1 else ''}:")
        lines += [f"  {s['path']}: {s['reason']}" for s in res["skipped"]]
    if "features" in res:
        f = res["features"]
        lines.append(f"wrote the outputs of {f['layer']} for {len(res['results'])} images to "
                     f"{f['path']}")
    return "\n".join(lines)


def main(argv=None):
    """The command line; returns the exit code (2: a user mistake, or no image could be read)."""
    args = parse_args(argv)
    prog = prog_name("convnet.predict", "convnet-predict")
    from .data import DataError
    try:
        check_environment()
        try:
            backend(args.device)
        except ValueError as e:
            raise UserError(f"--device: {e}") from None
        if args.features:
            out_dir = os.path.dirname(os.path.abspath(args.features[1]))
            if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
                raise UserError(f"--features: cannot write {args.features[1]}")
        res = predict(args.checkpoint, args.images, top=args.top, views=args.views,
                      device=args.device, features=args.features, data=args.data,
                      batch=args.batch)
    except (CheckpointError, ConfigError, DeviceError, DataError, UserError) as e:
        print(f"{error_prefix(prog)} {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1) if args.json else format_text(res))
    if not res["results"]:
        print(f"{error_prefix(prog)} none of the {len(res['skipped'])} inputs is a readable "
              "image", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
