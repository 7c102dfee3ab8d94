"""Train, test and resume convnets: ``python -m convnet.train CONFIG [options]``.

With no ``--data`` the net trains on convnet's built-in generated dataset (ten classes of
shapes, made on the fly, no download), sized so that ``python -m convnet.train
layers/alexnet.cfg`` finishes in a few minutes on a laptop CPU and shows the net learning.
"""
import json
import math
import os
import sys
import time

import numpy as np

from . import checkpoint, distributed, inference
from .checkpoint import CheckpointError
from .cli import (Parser, UserError, check_environment, error_prefix, int_at_least,
                  prog_name)
from .config import ConfigError, load_config
from .device import DeviceError, backend
from .shipped import DESIGN_SIZE, resolve_config, shipped_configs

__all__ = ["main", "Trainer", "parse_args"]

# The built-in dataset of the default command: 64x64 images (the smallest AlexNet accepts: its
# 3x3 pool3 window needs a 3x3 conv5 map), 8000 training and 1000 validation images.
DEFAULT_DATA = "synthetic:size=64,train=8000,test=1000"
DEFAULT_DATA_EPOCHS = 10
PAPER_EPOCHS = 90

# The options a checkpoint stores under "options" and a resumed run restores when they are not
# given again, with their defaults. The EXACT ones shape the run's trajectory (the data and its
# order, the batches, when the tests happen, whose errors drive the plateau schedule, and what
# they measure): given again at resume with another value they are refused in one line, so a
# resumed run is the run that was saved. The others are honoured: another --device (the run
# continues there; its sums run in another order), more --epochs (schedules driven by progress
# through the run stretch from there on), another --keep.
OPTION_DEFAULTS = {"data": DEFAULT_DATA, "seed": 0, "batch_size": 128, "test_freq": 0,
                   "multiview_test": False, "device": "cpu", "epochs": None, "keep": 3}
EXACT_OPTIONS = ("data", "seed", "batch_size", "test_freq", "multiview_test")


def parse_args(argv=None):
    p = Parser(
        prog=prog_name("convnet.train", "convnet-train"),
        description="Train a convnet described by a cuda-convnet layer config. With no --data, "
                    "train on the built-in generated dataset (no download).")
    p.add_argument("config", help="layer definition file (cuda-convnet INI format), or the name "
                                  "of a shipped config (alexnet, cifar18, tiny, tiny-towers); "
                                  "learning keys may be in it (one section per layer) or in "
                                  "--layer-params")
    p.add_argument("--layer-params", metavar="FILE",
                   help="layer params file (epsW, momW, wc, LRN constants...); read again on "
                        "--resume, so rates can be changed mid-run")
    p.add_argument("--data", metavar="SPEC",
                   help="data source: cifar:DIR, folder:DIR, shards:DIR, a bare DIR, or "
                        f"synthetic[:opts]. Default: the generated dataset ({DEFAULT_DATA})")
    p.add_argument("--save-dir", metavar="DIR",
                   help="where checkpoints and log.jsonl go (default: runs/<config>-<time>); "
                        "a directory that already holds files is refused unless --resume "
                        "continues the run in it or --force replaces it")
    p.add_argument("--force", action="store_true",
                   help="start a new run in a --save-dir that holds an old one: its checkpoints "
                        "and log.jsonl are deleted (other files are left alone)")
    p.add_argument("--epochs", type=int_at_least(1), metavar="N",
                   help=f"epochs to train (default: {DEFAULT_DATA_EPOCHS} on the generated "
                        f"dataset, {PAPER_EPOCHS} otherwise, as in the paper)")
    p.add_argument("--batch-size", type=int_at_least(1), metavar="N",
                   help="minibatch size: images per SGD step (default: 128; under mpirun, per "
                        "rank)")
    p.add_argument("--test-freq", type=int_at_least(0), metavar="STEPS",
                   help="test and checkpoint every STEPS training batches (default 0: at the end of "
                        "every epoch)")
    p.add_argument("--device",
                   help="cpu (default), cpu:N, cuda:N or emu:N; a layer with gpu=K runs on "
                        "device N+K (on the CPU: logical device cpu:N+K, the cores split "
                        "between the devices the net uses)")
    p.add_argument("--towers-on", metavar="DEVICES",
                   help="the device of each tower (gpu=0, gpu=1, ...), comma-separated, e.g. "
                        "cuda:0,cuda:0: both towers on one GPU, each a logical device with its "
                        "own streams (default: gpu=K on device N+K; on CUDA or emu with fewer "
                        "devices than towers, on (N+K) mod the number of devices, said once)")
    p.add_argument("--resume", metavar="PATH",
                   help="continue the run saved in PATH (a save directory: its newest good "
                        "checkpoint; or a ckpt-*.json file) with the options it was started "
                        "with; --device, --epochs, --keep and the params file may change, "
                        "options that would change its course are refused")
    p.add_argument("--test-only", action="store_true",
                   help="only test the (resumed or freshly initialised) net on the validation set")
    p.add_argument("--multiview-test", action="store_true", default=None,
                   help="test on 10 views per image (4 corners + centre, each flipped), "
                        "averaging the softmax outputs")
    p.add_argument("--seed", type=int_at_least(0),
                   help="seed of every random draw: weights, data order, augmentation, dropout "
                        "(default: 0)")
    p.add_argument("--write-features", metavar="LAYER",
                   help="write LAYER's outputs on the validation set to --feature-path and exit")
    p.add_argument("--feature-path", metavar="FILE",
                   help="npz file for --write-features (default: SAVE_DIR/features-LAYER.npz)")
    p.add_argument("--keep", type=int_at_least(1), metavar="K",
                   help="checkpoints to keep (default: 3)")
    p.add_argument("--workers", type=int_at_least(0), metavar="N",
                   help="data loading processes (0: in the trainer's process; default: chosen by "
                        "the data source)")
    p.add_argument("--print-every", type=int_at_least(1), default=50, metavar="N",
                   help="when stderr is not a terminal (a log file), one progress line every N "
                        "batches and at the end of each epoch (default: 50); a terminal gets one "
                        "line updated in place")
    p.add_argument("--mpi-timeout", type=float, default=distributed.DEFAULT_TIMEOUT,
                   metavar="SECONDS",
                   help="under mpirun: how long a rank waits for the others before it stops, "
                        "naming the ranks that are dead or hung (default: "
                        f"{distributed.DEFAULT_TIMEOUT:g})")
    p.add_argument("--check-grads", action="store_true",
                   help="check the whole net's gradients against finite differences on one "
                        "small batch (use a tiny config) and exit")
    args = p.parse_args(argv)
    # Which stored options were given (a resumed run restores the others), then the defaults.
    args.given = {k for k in OPTION_DEFAULTS if getattr(args, k) is not None}
    for k, v in OPTION_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def _default_save_dir(config):
    stem = os.path.splitext(os.path.basename(config))[0]
    return os.path.join("runs", f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def _run_files(directory):
    """The files a run writes in its save directory: checkpoints, the log, temporaries."""
    return sorted(f for f in os.listdir(directory)
                  if f == "log.jsonl" or f.startswith(("ckpt-", ".ckpt-", "log.jsonl.")))


def _log_step(line):
    """The step of a log.jsonl line; infinity for a line that is not a whole JSON record (the
    last one, cut by a kill mid-write), which resuming then drops with the other later ones."""
    try:
        record = json.loads(line)
        return int(record.get("step", 0))
    except (ValueError, TypeError, AttributeError):
        return math.inf


def _can_create_in(directory):
    """Whether `directory` (made with its parents if missing) can receive files."""
    d = os.path.abspath(directory)
    while not os.path.exists(d):
        d = os.path.dirname(d)
    return os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)


def _describe_data(spec, d):
    h, w = d.image_shape[1:]
    return (f"{spec}: {d.num_train:,} training and {d.num_test:,} validation images in "
            f"{d.num_classes} classes, {h}x{w} crops, {d.workers or 'no'} loader process"
            f"{'' if d.workers == 1 else 'es'}")


def _hms(seconds):
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """One epoch's progress on stderr. On a terminal: one tqdm line updated in place, with a bar
    of fixed width, trimmed at the end to the terminal's width (on 80 columns the statistics are
    cut, never the epoch, bar, batches, images/s or ETA). Otherwise (a log file, a
    pipe): one plain line every `every` batches and at the end of the epoch, no carriage returns.
    Each line has the epoch (numbered from 1), batches done, images/s, the whole run's ETA and
    the running statistics."""

    def __init__(self, epoch, epochs, done, total, every, stream=None):
        self.label = f"epoch {epoch}/{epochs}"
        self.total, self.every = total, every
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.images = 0
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, desc=self.label, file=self.stream,
                            dynamic_ncols=True, leave=True, unit="batch",
                            bar_format="{desc} {percentage:3.0f}%|{bar:16}| {n_fmt}/{total_fmt}"
                                       "{postfix}")

    def update(self, done, images, run_eta, text):
        """Batch `done` of the epoch finished with `images` images; returns images/s."""
        self.images += images
        rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
        status = f"{rate:.0f} img/s, ETA {_hms(run_eta)}, {text}"
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(done - self.bar.n)
        elif done % self.every == 0 or done == self.total:
            self.stream.write(f"{self.label} batch {done}/{self.total}: {status}\n")
            self.stream.flush()
        return rate

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Runs one training job: data, net, schedules, tests, checkpoints and the JSON-lines log."""

    def __init__(self, args, out=None):
        from . import data as data_mod
        from .net import Net
        # Under mpirun: rank 0 alone prints, logs and checkpoints (convnet/distributed.py).
        self.dist = distributed.from_environment(args.mpi_timeout)
        quiet = self.dist is not None and self.dist.rank > 0
        self.args, self.out = args, open(os.devnull, "w") if quiet else (out or sys.stdout)
        if self.dist:
            self.say(f"MPI: {self.dist.size} ranks, each training on its share of every batch; "
                     + ", ".join(f"rank {r} pid {p}" for r, p in self.dist.pids().items()))
        # --test-only and --write-features read a net; only training writes a run.
        self.training = not (args.test_only or args.write_features)
        self.clear_old_run = False
        self.resumed = None
        if args.resume:
            self.resumed, arrays = checkpoint.load(args.resume, checkpoint.RUN_FIELDS)
        meta = self.resumed or {}
        if self.dist:
            # --batch-size is per rank; the run's options and checkpoints hold the whole batch.
            args.batch_size *= self.dist.size
        opts = self._options(meta.get("options", {}))
        self.data_spec, self.seed, self.batch_size = opts["data"], opts["seed"], opts["batch_size"]
        self.test_freq, self.multiview, self.device = (opts["test_freq"], opts["multiview_test"],
                                                       opts["device"])
        self.keep = opts["keep"]
        if self.dist and self.batch_size < self.dist.size:
            raise UserError(f"the resumed run's batch of {self.batch_size} images cannot be "
                            f"shared by {self.dist.size} ranks")
        if self.multiview and self.batch_size < 10:
            raise UserError(f"--multiview-test needs a batch size >= 10 (10 views per image), "
                            f"got {self.batch_size}")
        synthetic = self.data_spec.startswith("synthetic")
        self.epochs = opts["epochs"] or (DEFAULT_DATA_EPOCHS if synthetic else PAPER_EPOCHS)
        self.save_dir = args.save_dir or ((os.path.dirname(meta["path"]) or ".") if self.resumed
                                          else _default_save_dir(args.config))
        if self.training:
            self._check_save_dir()
        self.config = self._load_config()
        self._check_costs()
        for w in self.config.warnings:
            self.say(f"warning: {w}")
        try:
            self.data = data_mod.open_source(self.data_spec, workers=args.workers)
        except data_mod.DataError as e:
            raise UserError(f"data source {self.data_spec!r}: {e}") from None
        self.say(f"data: {_describe_data(self.data_spec, self.data)}")
        try:
            self.net = Net(self.config, image_shape=self.data.image_shape, device=self.device,
                           batch_size=self.dist.capacity(self.batch_size) if self.dist
                           else self.batch_size, seed=self.seed, towers_on=args.towers_on)
        except ValueError as e:  # a bad --towers-on (ConfigError and DeviceError pass through)
            if args.towers_on is None or isinstance(e, ConfigError):
                raise
            raise UserError(f"--towers-on {args.towers_on}: {e}") from None
        if self.dist:
            self.net = distributed.DistributedNet(self.net, self.dist)
        self._check_net_fits_data()
        self._check_data()
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best = None
        if self.resumed:
            self._restore(arrays)
            if self.training:
                self._check_resume_point()

    # -- setup ------------------------------------------------------------------------------
    def say(self, text=""):
        print(text, file=self.out, flush=True)

    def _options(self, stored):
        """The run's options (OPTION_DEFAULTS' keys): a new run's from the command line; a
        resumed run's from its checkpoint, where the command line may change only what keeps
        the run exact (EXACT_OPTIONS must be left out or repeated; --test-only and
        --write-features may test on other data)."""
        a, out = self.args, {}
        if self.resumed:
            for path, reason in self.resumed["damaged"]:
                self.say(f"warning: {reason}; resuming from {self.resumed['path']} instead")
        for key in OPTION_DEFAULTS:
            value, given = getattr(a, key), key in a.given
            if not self.resumed or key not in stored:
                out[key] = value
                continue
            old = stored[key]
            flag = "--" + key.replace("_", "-")
            if given and value != old and key in EXACT_OPTIONS and self.training:
                raise UserError(f"{flag} {value}: the resumed run was trained with {old}, and a "
                                "resumed run keeps it so that it continues exactly as it would "
                                f"have; leave {flag} out, or start a new run")
            if given and value != old and key not in EXACT_OPTIONS and self.training:
                self.say(f"note: {flag} {value} (the run was saved with {old})")
            out[key] = value if given else old
        return out

    def _load_config(self):
        a, meta = self.args, self.resumed
        params = a.layer_params if a.layer_params else (meta or {}).get("params_path")
        if meta and not os.path.exists(a.config):
            raise UserError(f"{a.config}: no such config file (the run was made with "
                            f"{meta['def_path']})")
        if params and not os.path.exists(params):
            raise UserError(f"{params}: no such layer params file")
        cfg = load_config(a.config, params)
        if meta:
            # The definition must be the checkpoint's; the params may have changed.
            stored = load_config(meta["def_path"], meta.get("params_path"),
                                 def_text=meta["def_text"], params_text=meta.get("params_text"))
            self._stored_config = stored
        return cfg

    def _check_save_dir(self):
        """A new run gets a directory of its own: one that holds files is refused unless the run
        continues in it (--resume of the run saved there) or --force clears the old run."""
        d, a = self.save_dir, self.args
        if os.path.exists(d) and not os.path.isdir(d):
            raise UserError(f"--save-dir {d}: exists and is not a directory")
        continuing = bool(self.resumed) and os.path.isdir(d) and os.path.samefile(
            os.path.dirname(os.path.abspath(self.resumed["path"])), d)
        old = os.listdir(d) if os.path.isdir(d) else []
        if old and not continuing:
            if not a.force:
                what = (f"the run of {len(checkpoint.list_checkpoints(d))} checkpoint(s)"
                        if _run_files(d) else f"{len(old)} file(s)")
                raise UserError(f"--save-dir {d} already holds {what}: --resume {d} continues "
                                "that run, --force starts over (deleting its checkpoints and "
                                "log), or choose another --save-dir")
            self.clear_old_run = True
        if not _can_create_in(d):
            raise UserError(f"--save-dir {d}: not writable")

    def _check_costs(self):
        costs = [L.name for L in self.config.layers
                 if L.has("type") and L.text("type").startswith("cost.")]
        if not costs:
            raise ConfigError("the net has no cost layer (type=cost.logreg): nothing to train "
                              "or test", self.config.def_path)

    def _check_data(self):
        d, bs = self.data, self.batch_size
        if d.num_test == 0:
            raise UserError(f"data source {self.data_spec!r} has no validation images (the "
                            "trainer tests on them after every epoch): add a val/ split")
        if self.training and d.num_train_batches(bs) == 0:
            raise UserError(f"--batch-size {bs}: the data source has only {d.num_train} training "
                            "images, fewer than one batch")

    def _check_resume_point(self):
        if self.epoch >= self.epochs:
            raise UserError(f"the resumed run has already trained {self.epoch} of {self.epochs} "
                            f"epochs: give --epochs N with N > {self.epoch} to train on")
        nb = self.data.num_train_batches(self.batch_size)
        if self.batch_in_epoch > nb:
            raise UserError(f"the checkpoint stopped at batch {self.batch_in_epoch} of an epoch, "
                            f"but this data source has {nb} batches of {self.batch_size} "
                            "per epoch: resume with the data and batch size it was trained with")

    def _check_net_fits_data(self):
        for cost in self.net.costs:
            if cost.classes < self.data.num_classes:
                raise ConfigError(f"{cost.inputs[1].name!r} has {cost.classes} outputs but the "
                                  f"data source has {self.data.num_classes} classes",
                                  self.config.def_path, cost.name, "inputs")
            if cost.classes > self.data.num_classes:
                self.say(f"note: the net has {cost.classes} outputs and the data "
                         f"{self.data.num_classes} classes: outputs {self.data.num_classes}.."
                         f"{cost.classes - 1} are never a label (fine for a first run; set "
                         f"outputs={self.data.num_classes} in the config for a real one)")
        shipped = {os.path.abspath(path): name for name, path in shipped_configs().items()}
        name = shipped.get(os.path.abspath(self.config.def_path))
        design, side = DESIGN_SIZE.get(name), self.data.image_shape[1]
        if design and side < design:
            self.say(f"note: {name} was designed for {design}x{design} inputs; these are "
                     f"{side}x{side}, so its deeper maps are smaller than in the paper")

    def _restore(self, arrays):
        from .layers import make_layer
        meta = self.resumed
        old = {s.name: make_layer(s, self.net._neurons()).structure()
               for s in self._stored_config.layers}
        for L in self.net.layers:
            if L.name not in old:
                raise ConfigError("layer is not in the checkpointed net (the definition of a "
                                  "resumed run cannot change)", L.spec.file, L.name)
            now = L.structure()
            for key in sorted(set(now) | set(old[L.name])):
                if now.get(key) != old[L.name].get(key):
                    raise ConfigError(f"changed since the checkpoint ({old[L.name].get(key)!r} -> "
                                      f"{now.get(key)!r}); only params-file keys may change on "
                                      "resume", L.spec.file, L.name, key)
        self.net.load_state_arrays(arrays, meta["path"])
        self.step, self.epoch = meta["step"], meta["epoch"]
        self.batch_in_epoch, self.best = meta["batch_in_epoch"], meta.get("best")
        schedules = self.net.schedules()
        for key, st in meta.get("schedules", {}).items():
            if key in schedules and schedules[key].kind == st["kind"]:
                schedules[key].load_state(st)

    # -- logging ----------------------------------------------------------------------------
    def _open_log(self):
        if self.dist and self.dist.rank > 0:
            self.log = open(os.devnull, "w", encoding="utf-8")
            return
        os.makedirs(self.save_dir, exist_ok=True)
        if self.clear_old_run:
            old = _run_files(self.save_dir)
            for f in old:
                os.remove(os.path.join(self.save_dir, f))
            self.say(f"--force: deleted the old run in {self.save_dir} ({len(old)} files)")
        path = os.path.join(self.save_dir, "log.jsonl")
        if self.resumed and os.path.exists(path):
            # Drop what a killed run logged after its last checkpoint: the log then reads as one
            # uninterrupted run.
            with open(path, encoding="utf-8", errors="replace") as f:
                keep = [ln for ln in f if _log_step(ln) <= self.step]
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(keep)
            os.replace(tmp, path)
        self.log = open(path, "a", encoding="utf-8")

    def record(self, kind, **fields):
        fields = {"kind": kind, "step": self.step, "time": round(time.time(), 3), **fields}
        self.log.write(json.dumps(fields) + "\n")
        self.log.flush()

    # -- the run ----------------------------------------------------------------------------
    def run(self):
        a = self.args
        self.say(f"net {a.config}" + (f" + {self.config.params_path}"
                                      if self.config.params_path else "")
                 + f" on {self.device}, batch {self.batch_size}, seed {self.seed}")
        self.say(self.net.table())
        self.say(f"forward {self.net.total_flops / 1e9:.3f} GFLOP per image, "
                 f"{self.net.total_params:,} parameters")
        if self.net.cores:
            self.say("devices: " + ", ".join(f"{d} on cores {','.join(map(str, c))}"
                                             for d, c in self.net.cores.items()))
        for note in self.net.placement_notes:
            self.say(f"devices: {note}")
        for (a_dev, b_dev), on in self.net.peer_access.items():
            if not on:
                self.say(f"{a_dev} <-> {b_dev}: no peer access, transfers staged through pinned "
                         "host memory")
        if a.write_features:
            return self.write_features(a.write_features)
        if a.test_only:
            res = self.test()
            self.say(self._test_text(res))
            return res
        self._open_log()
        if self.resumed:
            self.say(f"resumed from {self.resumed['path']} at step {self.step} "
                     f"(epoch {self.epoch + 1}, batch {self.batch_in_epoch})")
            for path, _ in self.resumed["damaged"]:
                if os.path.samefile(os.path.dirname(os.path.abspath(path)), self.save_dir):
                    # Out of the way of this run's own checkpoints (and of --keep's pruning).
                    checkpoint.set_aside(path)
                    self.say(f"set the damaged {path} aside as {path}{checkpoint.DAMAGED_SUFFIX}")
            self.record("resume", checkpoint=self.resumed["path"])
        else:
            self.record("start", config=a.config, params=self.config.params_path,
                        data=self.data_spec, device=self.device, batch_size=self.batch_size,
                        epochs=self.epochs, seed=self.seed, parameters=self.net.total_params,
                        gflop_per_image=self.net.total_flops / 1e9)
        self.say(f"saving to {self.save_dir}")
        t0 = time.time()
        self.run_clock = (time.perf_counter(), self.step)
        result = None
        while self.epoch < self.epochs:
            result = self.train_epoch() or result
        self.say(f"done: {self.step} steps in {time.time() - t0:.0f} s")
        self.log.close()
        return result

    def _lr(self):
        """The learning rate of the first weight tensor (the one the progress line shows)."""
        p = self.net.params[0] if self.net.params else None
        return None if p is None else p.eps.value(self._fepoch(), self._progress())

    def _lr_text(self):
        lr = self._lr()
        return "" if lr is None else f"lr {lr:.2g}"

    def _fepoch(self, nb=None):
        nb = nb or self._nb
        return self.epoch + self.batch_in_epoch / max(nb, 1)

    def _progress(self):
        return min(1.0, self._fepoch() / self.epochs)

    def _run_eta(self):
        """Seconds left in the whole run at the pace of this process so far (tests included)."""
        t0, step0 = self.run_clock
        left = self.epochs * self._nb - self.epoch * self._nb - self.batch_in_epoch
        return left * (time.perf_counter() - t0) / max(self.step - step0, 1)

    def _progress_bar(self):
        return Progress(self.epoch + 1, self.epochs, self.batch_in_epoch, self._nb,
                        self.args.print_every,
                        stream=self.out if self.dist and self.dist.rank > 0 else None)

    def train_epoch(self):
        self._nb = self.data.num_train_batches(self.batch_size)
        # Resuming mid-epoch skips the batches already trained on.
        it = self.data.train_batches(self.epoch, self.batch_size, seed=self.seed,
                                     start=self.batch_in_epoch)
        freq = self.test_freq or self._nb
        bar = self._progress_bar()
        sums = np.zeros(4)
        result = None
        # Input wait: time the trainer spends blocked on the data pipeline, against the whole step.
        waited = busy = 0.0
        t_ready = time.perf_counter()
        # The statistics of each batch are looked at only every --print-every batches, before a
        # test and at the end of the epoch: on CUDA and emulated devices that is when the host
        # reads them from the device (net.StepStats), so the steps between never wait for them.
        # The sums, the printed lines and log.jsonl hold the same values as reading every step.
        pending = []
        for images, labels in it:
            t_got = time.perf_counter()
            wait = t_got - t_ready
            waited += wait
            n = images.shape[-1]
            stats = self.net.train_step(images, labels, step=self.step, epoch=self._fepoch(),
                                        progress=self._progress())
            t_ready = time.perf_counter()
            busy += t_ready - t_got
            self.step += 1
            self.batch_in_epoch += 1
            end = self.batch_in_epoch == self._nb
            read = end or self.step % freq == 0 or self.batch_in_epoch % self.args.print_every == 0
            pending.append({"stats": stats, "n": n, "step": self.step, "epoch": self._fepoch(),
                            "lr": self._lr(), "wait": wait, "time": round(time.time(), 3),
                            "transfers": [[t["edge"], t["direction"], t["bytes"], t["from"],
                                           t["to"]] for t in self.net.transfer_log]})
            if read:
                for b in pending:
                    b["st"] = next(iter(b["stats"].values()))
                    sums += (b["n"], b["st"]["logprob"], b["st"]["top1"], b["st"]["top5"])
            pending[-1]["rate"] = bar.update(
                self.batch_in_epoch, n, self._run_eta(),
                f"logprob {sums[1] / sums[0]:.3f} top1 {sums[2] / sums[0]:.3f} "
                f"top5 {sums[3] / sums[0]:.3f} {self._lr_text()}" if sums[0] else self._lr_text())
            if read:
                self._record_batches(pending, bar)
                pending = []
            if self.step % freq == 0 or end:
                bar.close()
                if end:
                    self._epoch_summary(it, waited, busy)
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                result = self.test_and_save()
                if not end:
                    bar = self._progress_bar()
        return result

    def _record_batches(self, pending, bar):
        """log.jsonl lines of the batches in `pending` (statistics read), in step order; stops
        the run at the first whose cost is not finite."""
        for b in pending:
            st, n = b["st"], b["n"]
            self.record("batch", step=b["step"], time=b["time"], epoch=b["epoch"], n=n,
                        logprob=st["logprob"] / n, top1=st["top1"] / n, top5=st["top5"] / n,
                        images_per_s=round(b["rate"], 1), lr=b["lr"],
                        input_wait_ms=round(b["wait"] * 1e3, 3),
                        **({"transfers": b["transfers"]} if b["transfers"] else {}))
            if not math.isfinite(st["logprob"]):
                bar.close()
                raise UserError(f"step {b['step']}: the cost is {st['logprob']} (diverged); "
                                "lower the learning rates in the params file and --resume")

    def _epoch_summary(self, it, waited, busy):
        share = waited / (waited + busy) if waited + busy > 0 else 0.0
        self.say(f"epoch {self.epoch + 1}: input wait {100 * share:.1f}% of step time "
                 f"({waited:.1f} s of {waited + busy:.1f} s); {it.summary()}")
        self.record("epoch", epoch=self.epoch + 1, input_wait_s=round(waited, 3),
                    step_time_s=round(waited + busy, 3), input_wait_share=round(share, 4),
                    skipped=[p for p, _ in it.skipped])

    def test_and_save(self):
        res = self.test()
        layer_stats = self.weight_stats()
        self.say(self._test_text(res))
        for name, s in layer_stats.items():
            self.say(f"    {name:>12}  |w| {s['w']:.3e}  |dw| {s['dw']:.3e}  "
                     f"ratio {s['ratio']:.2e}")
        err = res["top1"]
        dropped = [k for k, s in self.net.schedules().items() if s.observe(err)]
        if dropped:
            self.say(f"validation error stopped improving: learning rate divided "
                     f"({', '.join(dropped)})")
        self.best = err if self.best is None else min(self.best, err)
        self.record("test", epoch=self.epoch + self.batch_in_epoch / max(self._nb, 1),
                    **res, layers=layer_stats, lr_dropped=dropped)
        self.save()
        return res

    def _test_text(self, res):
        views = " (10 views)" if res.get("views", 1) == 10 else ""
        return (f"test{views} @ step {self.step}: logprob {res['logprob']:.4f}  "
                f"top-1 error {res['top1']:.4f}  top-5 error {res['top5']:.4f}  "
                f"({res['images']} images)")

    def weight_stats(self):
        out = {}
        for p in self.net.params:
            w, inc = np.abs(p.value.numpy()), np.abs(p.inc.numpy())
            mw, mdw = float(w.mean()), float(inc.mean())
            out[p.full_name] = {"w": mw, "dw": mdw, "ratio": mdw / mw if mw else 0.0}
        return out

    def test(self):
        """Validation errors (fractions) over the whole test set, single or 10-view."""
        multiview = self.multiview
        bs = self.batch_size // 10 if multiview else self.batch_size
        cost = self.net.costs[0]
        probs_name = self.net.fused[cost.name].name
        tot = np.zeros(4)
        for images, labels in self.data.test_batches(bs, multiview=multiview):
            stats = self.net.forward(images, labels, train=False, step=self.step)
            if multiview:
                b = images.shape[-1] // 10
                probs = self.net.output(probs_name).reshape(-1, 10, b).mean(axis=1)
                lab = labels[:b]
                p_lab = probs[lab, np.arange(b)]
                rank = (probs > p_lab[None, :]).sum(axis=0)
                tot += (b, float(np.log(np.maximum(p_lab, 1e-38)).sum()),
                        float((rank >= 1).sum()), float((rank >= 5).sum()))
            else:
                st = stats[cost.name]
                tot += (images.shape[-1], st["logprob"], st["top1"], st["top5"])
        n = max(tot[0], 1)
        return {"images": int(tot[0]), "logprob": tot[1] / n, "top1": tot[2] / n,
                "top5": tot[3] / n, "views": 10 if multiview else 1}

    def save(self):
        if self.dist and self.dist.rank > 0:
            return
        cfg = self.config if not self.resumed else self._stored_config
        meta = {
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "seed": self.seed,
            "best": self.best,
            "schedules": {k: {"kind": s.kind, **s.state()}
                          for k, s in self.net.schedules().items()},
            "def_path": cfg.def_path, "def_text": cfg.def_text,
            "params_path": self.config.params_path, "params_text": self.config.params_text,
            "options": {"data": self.data_spec, "seed": self.seed,
                        "batch_size": self.batch_size, "epochs": self.epochs,
                        "test_freq": self.test_freq, "multiview_test": self.multiview,
                        "device": self.device, "keep": self.keep},
        }
        # What inference needs (mean image, sizes, class names): convnet.inference.
        meta["inference"], extra = inference.record(
            inference.InferenceInfo.from_dataset(self.data, self.data_spec))
        path = checkpoint.save(self.save_dir, self.step, {**self.net.state_arrays(), **extra},
                               meta, keep=self.keep)
        self.say(f"saved {path}")

    def write_features(self, name):
        if name not in self.net.output_names():
            raise UserError(f"--write-features: no layer named {name!r} with an output; layers: "
                            + ", ".join(self.net.output_names()))
        feats, labs = [], []
        for images, labels in self.data.test_batches(self.batch_size):
            self.net.forward(images, labels, train=False, step=self.step)
            y = self.net.output(name)
            feats.append(np.moveaxis(y, -1, 0).copy())
            labs.append(labels.copy())
        path = self.args.feature_path or os.path.join(self.save_dir, f"features-{name}.npz")
        if self.dist and self.dist.rank > 0:
            return path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        np.savez(path, features=np.concatenate(feats), labels=np.concatenate(labs))
        self.say(f"wrote {sum(len(f) for f in feats)} feature vectors of layer {name} "
                 f"(shape {feats[0].shape[1:]}) to {path}")
        return path


def main(argv=None):
    """The command line; returns the exit code (2: a user mistake, reported as one line)."""
    args = parse_args(argv)
    from .data import DataError
    try:
        check_environment()
        path = resolve_config(args.config)
        if path is None:
            raise UserError(f"{args.config}: no such file, and no shipped config of that name "
                            f"(shipped: {', '.join(shipped_configs())})")
        args.config = path
        try:
            backend(args.device)  # exists and is available: before any data is read
        except ValueError as e:
            raise UserError(f"--device: {e}") from None
        if args.feature_path and not args.write_features:
            raise UserError("--feature-path is the output of --write-features, which is not given")
        if args.feature_path and (os.path.isdir(args.feature_path) or not _can_create_in(
                os.path.dirname(args.feature_path) or ".")):
            raise UserError(f"--feature-path {args.feature_path}: cannot write a file there")
        if args.force and args.resume:
            raise UserError("--force starts a new run and --resume continues one: give one")
        if args.check_grads:
            from .gradcheck import check_net_grads
            ok = check_net_grads(args)
            return 0 if ok else 1
        trainer = Trainer(args)
        trainer.run()
        return 0
    except distributed.DistributedError as e:
        print(f"{error_prefix(prog_name('convnet.train', 'convnet-train'))} {e}", file=sys.stderr,
              flush=True)
        distributed.abort()
    except (ConfigError, DeviceError, DataError, CheckpointError, UserError) as e:
        print(f"{error_prefix(prog_name('convnet.train', 'convnet-train'))} {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nconvnet.train: interrupted (the last checkpoint is intact; --resume to "
              "continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
