"""What a net learned, as pictures: ``python -m convnet.show RUN_DIR|CHECKPOINT ... [--out DIR]``.

Four figures, each a PNG in ``--out`` (default: the first run's directory), drawn with matplotlib
(an optional extra: ``pip install convnet[show]``), also shown in a window where a display exists
(``--no-window``: never):

* ``curves.png``: training cost (-log p of the label) and top-1 error per batch, smoothed (a
  moving average of ``--smooth`` batches), with the validation tests as markers, against the
  epoch; several runs overlaid, one colour each.
* ``filters.png``: the first conv layer's filters as an RGB grid, each filter scaled to the full
  range on its own (its min to black, its max to white), as in the paper's figure 3; a first
  layer without 3 input channels per filter shows each filter's channel mean in grey.
* ``predictions.png``: validation images (of different classes where there are enough) with
  their five most probable classes as bars, the bar
  of the true label red (the paper's figure 4, left); a true label outside the five is named
  under the bars.
* ``neighbours.png``: for a few validation images (first column), the training images whose
  last-hidden-layer activations are nearest in Euclidean distance (the paper's figure 4, right),
  searched among ``--train-images`` evenly spaced training images.

The last two read the data source the net was trained on (stored in the checkpoint; ``--data``
names another); when it cannot be opened they are left out with a note.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

from .checkpoint import CheckpointError
from .cli import Parser, UserError, error_prefix, int_at_least, prog_name
from .config import ConfigError
from .inference import Model, say_stderr, top_k

__all__ = ["main", "show", "plot_curves", "plot_filters", "plot_predictions",
           "plot_neighbours", "read_log"]

DPI = 100


def _pyplot(window):
    try:
        import matplotlib
    except ImportError:
        raise UserError("convnet.show draws with matplotlib: pip install matplotlib "
                        "(or convnet[show])") from None
    if not window:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def has_display():
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# -- (a) curves ----------------------------------------------------------------------------------
def read_log(run_dir):
    """(batch records, test records) of a run's log.jsonl; lines that do not parse are skipped."""
    path = os.path.join(run_dir, "log.jsonl")
    batches, tests = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "batch":
                batches.append(rec)
            elif rec.get("kind") == "test":
                tests.append(rec)
    return batches, tests


def smooth(values, window):
    """Moving average over the last `window` values (fewer at the start)."""
    v = np.asarray(values, np.float64)
    if window <= 1 or v.size == 0:
        return v
    c = np.cumsum(np.concatenate([[0.0], v]))
    i = np.arange(1, v.size + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def plot_curves(plt, runs, out, window=20):
    """runs: [(label, run_dir)]; writes curves.png (1200x450)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=DPI)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, d) in enumerate(runs):
        batches, tests = read_log(d)
        col = colours[k % len(colours)]
        for ax, key in zip(axes, ("logprob", "top1")):
            if batches:
                ep = [b["epoch"] for b in batches]
                ax.plot(ep, smooth([b[key] for b in batches], window), color=col, lw=1,
                        alpha=0.8, label=f"{label} train")
            if tests:
                ax.plot([t["epoch"] for t in tests], [t[key] for t in tests], "o--",
                        color=col, ms=4, label=f"{label} validation")
    for ax, title in zip(axes, ("cost (-log p of the label)", "top-1 error")):
        ax.set_xlabel("epoch")
        ax.set_title(title + (f", training smoothed over {window} batches" if window > 1 else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, out, "curves.png")


# -- (b) filters ---------------------------------------------------------------------------------
def first_conv(net):
    for L in net.order:
        if L.TYPE == "conv" and L.inputs and L.inputs[0].is_data:
            return L
    return None


def filter_grid(w, cols=None, gap=1):
    """w (C, fs, fs, F) -> an image (rows, cols, 3) in [0, 1] of the F filters, each scaled to
    [0, 1] by its own min and max; RGB when C == 3, else the channel mean in grey."""
    c, fs, _, f = w.shape
    tiles = w.transpose(3, 1, 2, 0).astype(np.float64)              # (F, fs, fs, C)
    tiles = tiles if c == 3 else np.repeat(tiles.mean(axis=3, keepdims=True), 3, axis=3)
    lo = tiles.min(axis=(1, 2, 3), keepdims=True)
    span = tiles.max(axis=(1, 2, 3), keepdims=True) - lo
    tiles = (tiles - lo) / np.where(span > 0, span, 1.0)
    cols = cols or math.ceil(math.sqrt(f * 1.5))
    rows = math.ceil(f / cols)
    grid = np.ones((rows * (fs + gap) + gap, cols * (fs + gap) + gap, 3))
    for i in range(f):
        r, q = divmod(i, cols)
        y, x = gap + r * (fs + gap), gap + q * (fs + gap)
        grid[y:y + fs, x:x + fs] = tiles[i]
    return grid


def plot_filters(plt, model, out):
    """Writes filters.png (800x600)."""
    L = first_conv(model.net)
    if L is None:
        raise UserError("the net has no conv layer reading the images: no filters to show")
    w = L.ws[0].value.numpy()
    fig, ax = plt.subplots(figsize=(8, 6), dpi=DPI)
    ax.imshow(filter_grid(w), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{L.name}: {w.shape[3]} filters of {w.shape[1]}x{w.shape[1]}x{w.shape[0]}, "
                 "each scaled to its own range", fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, out, "filters.png")


# -- (c) predictions and (d) neighbours ----------------------------------------------------------
def _picks(count, k):
    return np.unique(np.linspace(0, count - 1, min(k, count)).round().astype(np.int64))


def _distinct_picks(labels, k):
    """Up to k evenly spread images of different labels (then any, if fewer labels)."""
    step = max(1, len(labels) // (16 * k))
    picks, seen = [], set()
    for i in range(0, len(labels), step):
        if int(labels[i]) not in seen:
            seen.add(int(labels[i]))
            picks.append(i)
            if len(picks) == k:
                break
    rest = [i for i in _picks(len(labels), k) if i not in picks]
    return np.array(sorted(picks + rest[:k - len(picks)]), np.int64)


def plot_predictions(plt, model, source, out, images=8):
    """Writes predictions.png (1600x800): `images` validation images with their top-5 bars."""
    idx = _distinct_picks(source.labels(1), images)
    batch, labels, kept, _ = model.prepare_source(source, 1, idx)
    probs, _ = model.probabilities(batch)
    cols = min(4, len(kept)) or 1
    rows = math.ceil(len(kept) / cols) if kept else 1
    fig = plt.figure(figsize=(16, 8), dpi=DPI)
    grid = fig.add_gridspec(rows * 2, cols, height_ratios=[3, 2] * rows)
    for j, k in enumerate(kept):
        r, q = divmod(j, cols)
        ax = fig.add_subplot(grid[2 * r, q])
        ax.imshow(source.load(1, int(idx[k]), source.key(1, int(idx[k]))))
        ax.set_axis_off()
        true = int(labels[j])
        ax.set_title(model.info.label_name(true), fontsize=9)
        best = top_k(probs[:, j:j + 1], 5)[:, 0]
        bx = fig.add_subplot(grid[2 * r + 1, q])
        colours = ["tab:red" if b == true else "tab:blue" for b in best]
        bx.barh(np.arange(len(best))[::-1], probs[best, j], color=colours)
        bx.set_yticks(np.arange(len(best))[::-1])
        bx.set_yticklabels([model.info.label_name(int(b))[:24] for b in best], fontsize=8)
        bx.set_xlim(0, 1)
        bx.tick_params(axis="x", labelsize=7)
        if true not in best:
            bx.set_xlabel(f"true: {model.info.label_name(true)[:24]} (not in the top 5)",
                          fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, out, "predictions.png")


def _features(model, source, split, idx, layer):
    """(features (len(kept), D), kept positions) of `layer` for images idx, centre crops."""
    feats, kept_all = [], []
    step = model.net.batch_size
    for lo in range(0, len(idx), step):
        batch, _, kept, _ = model.prepare_source(source, split, idx[lo:lo + step])
        _, outs = model.probabilities(batch, layers=(layer,))
        y = outs[layer]
        feats.append(y.reshape(-1, y.shape[-1]).T.astype(np.float64))
        kept_all += [lo + k for k in kept]
    return np.concatenate(feats) if feats else np.zeros((0, 1)), kept_all


def nearest(queries, pool, k):
    """For each row of queries, the indices of the k rows of pool nearest in Euclidean distance
    (ties: the lower index first)."""
    d2 = ((queries ** 2).sum(1)[:, None] - 2 * queries @ pool.T + (pool ** 2).sum(1)[None])
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


def plot_neighbours(plt, model, source, out, queries=5, k=6, train_images=2000):
    """Writes neighbours.png (1400x1000)."""
    layer = model.last_hidden_layer()
    q_idx = _distinct_picks(source.labels(1), queries)
    t_idx = _picks(source.count(0), train_images)
    qf, q_kept = _features(model, source, 1, q_idx, layer)
    tf, t_kept = _features(model, source, 0, t_idx, layer)
    near = nearest(qf, tf, min(k, len(t_kept)))
    fig, axes = plt.subplots(max(1, len(q_kept)), k + 1, figsize=(14, 10), dpi=DPI,
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, qk in enumerate(q_kept):
        i = int(q_idx[qk])
        axes[r, 0].imshow(source.load(1, i, source.key(1, i)))
        true = model.info.label_name(int(source.labels(1)[i]))
        axes[r, 0].set_title(f"validation: {true}"[:32], fontsize=8)
        for c, t in enumerate(near[r]):
            j = int(t_idx[t_kept[t]])
            axes[r, c + 1].imshow(source.load(0, j, source.key(0, j)))
            axes[r, c + 1].set_title(model.info.label_name(int(source.labels(0)[j]))[:18],
                                     fontsize=8)
    fig.suptitle(f"nearest of {len(t_kept)} training images by {layer} activations "
                 "(Euclidean)", fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, out, "neighbours.png")


def _save(plt, fig, out, name):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=DPI)
    return path


# -- the command ---------------------------------------------------------------------------------
def _run_dir(path):
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def show(paths, out=None, *, data=None, window=None, smooth_batches=20, images=8,
         train_images=2000, device="cpu", say=say_stderr):
    """Draws the figures of the module docstring; returns the PNG paths written. `window`:
    also show them in a window (None: when a display exists)."""
    paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]
    window = has_display() if window is None else window and has_display()
    out = out or _run_dir(paths[0])
    os.makedirs(out, exist_ok=True)
    plt = _pyplot(window)
    written = []
    runs = [(os.path.basename(os.path.normpath(_run_dir(p))), _run_dir(p)) for p in paths]
    logged = [(label, d) for label, d in runs if os.path.isfile(os.path.join(d, "log.jsonl"))]
    if logged:
        written.append(plot_curves(plt, logged, out, smooth_batches))
    else:
        say(f"note: no log.jsonl in {', '.join(d for _, d in runs)}: no curves")
    model = Model.load(paths[0], device=device, data=data, batch_images=64, views=1, say=say)
    written.append(plot_filters(plt, model, out))
    spec = data or model.info.data
    from .data import DataError
    from .data.sources import open_spec
    try:
        source = open_spec(spec)
    except DataError as e:
        say(f"note: the data source {spec!r} cannot be opened ({e}): no predictions and no "
            "neighbours (--data names another)")
        source = None
    if source is not None and source.count(1) == 0:
        say(f"note: the data source {spec!r} has no validation images: no predictions and no "
            "neighbours")
        source = None
    if source is not None:
        written.append(plot_predictions(plt, model, source, out, images))
        written.append(plot_neighbours(plt, model, source, out, train_images=train_images))
    if window:
        plt.show()
    plt.close("all")
    return written


def main(argv=None):
    """The command line; returns the exit code (2: a user mistake, as one line)."""
    prog = prog_name("convnet.show", "convnet-show")
    p = Parser(prog=prog, description="Draw a run's learning curves, first-layer filters, "
                                      "predictions and nearest neighbours as PNG files.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR|CHECKPOINT",
                   help="run directories (curves overlaid; the other figures from the first "
                        "one's latest checkpoint) or a ckpt-*.json")
    p.add_argument("--out", metavar="DIR", help="where the PNGs go (default: the first run's "
                                                "directory)")
    p.add_argument("--data", metavar="SPEC", help="the data source for the validation and "
                                                  "training images (default: the run's)")
    p.add_argument("--smooth", type=int_at_least(1), default=20, metavar="N",
                   help="moving average of the training curves over N batches (default: 20)")
    p.add_argument("--images", type=int_at_least(1), default=8, metavar="N",
                   help="validation images in predictions.png (default: 8)")
    p.add_argument("--train-images", type=int_at_least(1), default=2000, metavar="N",
                   help="training images searched for nearest neighbours (default: 2000)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda:N or emu:N")
    p.add_argument("--window", action=argparse.BooleanOptionalAction, default=None,
                   help="also open the figures in a window (default: when a display exists)")
    args = p.parse_args(argv)
    from .data import DataError
    from .device import DeviceError
    try:
        for r in args.runs:
            if not os.path.exists(r):
                raise UserError(f"{r}: no such run directory or checkpoint")
        written = show(args.runs, args.out, data=args.data, window=args.window,
                       smooth_batches=args.smooth, images=args.images,
                       train_images=args.train_images, device=args.device)
    except (CheckpointError, ConfigError, DataError, DeviceError, UserError, ValueError) as e:
        print(f"{error_prefix(prog)} {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
