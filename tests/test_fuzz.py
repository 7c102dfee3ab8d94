"""The self-fuzzing suite (hypothesis). Each target ends in its documented exception types, never
a crash, a hang or a traceback from the command line:

* configs: every config of layers/ and tests/fixtures/ mutated (numbers replaced by other
  plausible numbers, values by hostile spellings and sizes, bytes inserted, lines deleted or
  repeated, the file cut short), loaded
  and built (ConfigError, DeviceError), and where the net is small, trained for a step; and a
  few through the command line (exit status 0 or 2, one line, no traceback);
* checkpoints: a real checkpoint truncated and bit-flipped at random (CheckpointError, or the
  very arrays that were saved);
* images: random bytes (after nothing or a JPEG, PNG, GIF, BMP or TIFF magic number), and real
  small JPEG, PNG (8 and 16-bit), GIF, BMP and TIFF files with random bits flipped and cut
  short, as image files (BadImageError, or a uint8 RGB image);
* op bindings: random argument values into every binding of the cpu and emu modules, in a
  subprocess (tests/fuzz_ops.py): ValueError, TypeError or MemoryError.

Budgets: small by default (a run of the suite takes about a minute on 2 cores); the same targets
with `-m slow` run FUZZ_SLOW examples each; CONVNET_FUZZ_EXAMPLES overrides both. The default
runs are derandomized (the same examples every run, so CI is repeatable); the slow ones draw new
examples every run."""
import contextlib
import glob
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convnet
from convnet import checkpoint, memory
from convnet.checkpoint import CheckpointError
from convnet.config import ConfigError, load_config
from convnet.data import BadImageError, images
from convnet.device import DeviceError
from convnet.net import Net
from convnet.train import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

FUZZ_SLOW = 1000
_OVERRIDE = int(os.environ.get("CONVNET_FUZZ_EXAMPLES", "0"))


def budgets(default):
    """(examples, derandomize) for the default run and the slow one."""
    return [pytest.param((_OVERRIDE or default, True), id=f"{_OVERRIDE or default}"),
            pytest.param((_OVERRIDE or FUZZ_SLOW, False), id=f"{_OVERRIDE or FUZZ_SLOW}",
                         marks=pytest.mark.slow)]


def fuzz(budget, strategy, check):
    examples, derandomize = budget

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        check(case)

    run()


# -- configs ------------------------------------------------------------------------------------

# (definition file, params file or None, image side): every config the project ships or reads.
def _fixture(name, params=None):
    return os.path.join(FIX, name + ".cfg"), params and os.path.join(FIX, params + ".cfg")


CONFIGS = [(p, None, {"tiny": 12, "tiny-towers": 12, "tiny-alexnet": 24, "tiny-alexnet-2gpu": 24,
                      "cifar18": 32, "cifar-local": 32}.get(os.path.basename(p)[:-4], 224))
           for p in sorted(glob.glob(os.path.join(ROOT, "layers", "*.cfg")))] + [
    (*_fixture(name, params), side) for name, params, side in [
        ("imagenet-1gpu", "imagenet-1gpu-params", 224),
        ("imagenet-2gpu-model", "imagenet-2gpu-model-params", 224),
        ("imagenet-2gpu-data", "imagenet-params-data", 224),
        ("imagenet-4gpu-data", "imagenet-params-data", 224),
        ("imagenet-4gpu-data-model", "imagenet-params-4gpu-data-model", 224),
        ("cifar-conv", "cifar-conv-params", 32),
        ("cifar-local", "cifar-local-params", 24),
        ("every-layer", "every-layer-params", 12),
        ("gradient-check", "gradient-check-params", 12),
        ("export-net", None, 13),
        ("tiny-data-2gpu", None, 12),
        ("tiny-hybrid-2gpu", None, 12),
        ("tiny-sgd", None, 12)]]
# Every fixture file is fuzzed.
assert {f for c in CONFIGS for f in c[:2] if f} >= set(glob.glob(os.path.join(FIX, "*.cfg")))

HOSTILE_VALUES = ["-1", "0", "1", "2147483647", "2147483648", "4294967296", "1" + "0" * 22,
                  "1_6", "\u0661\u0662", "0x10", "1e309", "nan", "inf", "-0", "", " ", "abc",
                  "3.5", "[", "plateau[base=0.01;patience=-1]", "step[base=1;epochs=]", "relu",
                  "tanh[1,2,3]", "a,b", ",", "data,data", "\u00e9", "\U0001F600"]
VALUES = st.one_of(st.sampled_from(HOSTILE_VALUES), st.integers(-2**70, 2**70).map(str),
                   st.text(max_size=8).filter(lambda s: "\n" not in s and "\r" not in s))
# Plausible numbers: the mutated net is often still valid, and is built and trained.
NUMBERS = st.one_of(st.integers(0, 40).map(str), st.floats(0, 2).map(lambda v: f"{v:.3g}"))
NUMBER_CHANGE = st.tuples(st.just("number"), st.integers(0, 10**6), NUMBERS)
MUTATION = st.one_of(
    NUMBER_CHANGE, NUMBER_CHANGE, NUMBER_CHANGE,
    st.tuples(st.just("value"), st.integers(0, 10**6), VALUES),
    st.tuples(st.just("bytes"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
    st.tuples(st.just("repeat"), st.integers(0, 10**6)),
    st.tuples(st.just("cut"), st.integers(0, 10**6)),
)
# Half the cases only change numbers (to reach the shape checks, the build and a training step),
# half mix in every kind of mutation.
MUTATIONS = st.one_of(st.lists(NUMBER_CHANGE, min_size=1, max_size=3),
                      st.lists(MUTATION, min_size=1, max_size=3))
CONFIG_CASES = st.tuples(st.sampled_from(range(len(CONFIGS))), st.booleans(), MUTATIONS)


_NUMERIC = re.compile(rb"[0-9.eE+-]+")


def mutate(data, mutations):
    lines = data.split(b"\n")
    for m in mutations:
        kind, at = m[0], m[1]
        if kind in ("value", "number"):
            keyed = [i for i, ln in enumerate(lines) if b"=" in ln and not ln.startswith(b"#")
                     and (kind == "value" or _NUMERIC.fullmatch(ln.split(b"=", 1)[1].strip()))]
            if keyed:
                i = keyed[at % len(keyed)]
                lines[i] = lines[i].split(b"=", 1)[0] + b"=" + m[2].encode("utf-8")
        elif kind == "bytes":
            text = b"\n".join(lines)
            at %= len(text) + 1
            lines = (text[:at] + m[2] + text[at:]).split(b"\n")
        elif kind == "delete" and lines:
            del lines[at % len(lines)]
        elif kind == "repeat" and lines:
            i = at % len(lines)
            lines.insert(i, lines[i])
        elif kind == "cut":
            text = b"\n".join(lines)
            lines = text[:at % (len(text) + 1)].split(b"\n")
    return b"\n".join(lines)


# A net is built only when it fits in this much (the check under test refuses larger ones),
# and trained for a step when it is also this cheap.
FUZZ_MEMORY = 64 * 2**20
FUZZ_STEP_FLOPS = 1e8


@pytest.fixture
def small_machine(monkeypatch):
    monkeypatch.setattr(memory, "host_memory_bytes", lambda: FUZZ_MEMORY)


def _mutated_files(tmp_path, case):
    index, in_params, mutations = case
    def_path, params_path, side = CONFIGS[index]
    target = params_path if in_params and params_path else def_path
    paths = []
    for p in (def_path, params_path):
        if p is None:
            paths.append(None)
            continue
        data = open(p, "rb").read()
        out = tmp_path / os.path.basename(p)
        out.write_bytes(mutate(data, mutations) if p == target else data)
        paths.append(str(out))
    return paths, side


@pytest.mark.parametrize("budget", budgets(60))
def test_fuzz_configs(tmp_path, small_machine, budget):
    def check(case):
        (def_path, params_path), side = _mutated_files(tmp_path, case)
        try:
            net = Net(load_config(def_path, params_path), image_shape=(3, side, side),
                      batch_size=2, seed=0)
        except (ConfigError, DeviceError):
            return
        if net.total_flops < FUZZ_STEP_FLOPS:
            images_ = np.random.default_rng(0).standard_normal((3, side, side, 2)).astype(
                np.float32)
            net.train_step(images_, np.zeros(2, np.int32), step=0, epoch=0.0, progress=0.0)

    fuzz(budget, CONFIG_CASES, check)


@pytest.mark.parametrize("budget", budgets(6))
def test_fuzz_configs_through_the_command_line(tmp_path, small_machine, budget):
    tiny_cases = st.tuples(st.sampled_from([i for i, c in enumerate(CONFIGS) if c[2] <= 24]),
                           st.just(False), MUTATIONS)

    def check(case):
        (def_path, params_path), side = _mutated_files(tmp_path, case)
        argv = [def_path, "--data", f"synthetic:size={side},train=8,test=8", "--batch-size", "4",
                "--test-only"] + (["--layer-params", params_path] if params_path else [])
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        text = err.getvalue()
        assert code in (0, 2) and "Traceback" not in text, text
        if code == 2:
            assert text.count("\n") == 1 and text.startswith("convnet.train: error:"), text

    fuzz(budget, tiny_cases, check)


# -- checkpoints --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    assert main([os.path.join(ROOT, "layers", "tiny.cfg"), "--data",
                 "synthetic:size=12,train=64,test=32", "--batch-size", "32", "--epochs", "1",
                 "--save-dir", str(d)]) == 0
    path = checkpoint.latest(str(d))
    meta, arrays = checkpoint.load(path)
    return path, open(path, "rb").read(), open(path[:-5] + ".npz", "rb").read(), arrays


DAMAGE = st.tuples(st.booleans(),                                    # the JSON or the arrays
                   st.one_of(st.none(), st.floats(0, 1)),            # cut at this fraction
                   st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                            max_size=4))                             # bits to flip


@pytest.mark.parametrize("budget", budgets(80))
def test_fuzz_checkpoints(tmp_path, saved_checkpoint, budget):
    path, json_bytes, npz_bytes, arrays = saved_checkpoint

    def check(case):
        in_json, cut, flips = case
        data = bytearray(json_bytes if in_json else npz_bytes)
        if cut is not None:
            data = data[:int(cut * len(data))]
        for where, bit in flips:
            if data:
                data[int(where * len(data))] ^= 1 << bit
        j, z = tmp_path / "ckpt-00000002.json", tmp_path / "ckpt-00000002.npz"
        j.write_bytes(bytes(data) if in_json else json_bytes)
        z.write_bytes(npz_bytes if in_json else bytes(data))
        try:
            _, got = checkpoint.load(str(j))
        except CheckpointError as e:
            assert "\n" not in str(e)
            return
        # Loaded: then it holds exactly what was saved (a flip the checks cannot see must not
        # change an array).
        assert got.keys() == arrays.keys()
        for k in arrays:
            np.testing.assert_array_equal(got[k], arrays[k])

    fuzz(budget, DAMAGE, check)


# -- images -------------------------------------------------------------------------------------

HEADERS = [b"", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n", b"GIF89a",
           b"BM", b"II*\x00"]
EXTENSIONS = [".jpg", ".png", ".gif", ".bmp", ".tif"]


def _valid_images():
    """A small real image in each format (greyscale, RGB, 16-bit), to be damaged."""
    from PIL import Image
    rs = np.random.RandomState(0)
    out = []
    for fmt, arr in [("JPEG", rs.randint(0, 256, (17, 23, 3), np.uint8)),
                     ("PNG", rs.randint(0, 256, (9, 14, 3), np.uint8)),
                     ("PNG", rs.randint(0, 65536, (9, 14)).astype(np.uint16)),
                     ("GIF", rs.randint(0, 256, (8, 8), np.uint8)),
                     ("BMP", rs.randint(0, 256, (5, 7, 3), np.uint8)),
                     ("TIFF", rs.randint(0, 65536, (6, 5)).astype(np.uint16))]:
        b = io.BytesIO()
        Image.fromarray(arr).save(b, fmt)
        out.append(b.getvalue())
    return out


VALID_IMAGES = _valid_images()
IMAGE_CASES = st.one_of(
    # random bytes, after nothing or after a format's magic number
    st.tuples(st.sampled_from(HEADERS), st.binary(max_size=2000), st.sampled_from(EXTENSIONS)),
    # a real image with bits flipped and perhaps cut short
    st.tuples(st.sampled_from(range(len(VALID_IMAGES))),
              st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                       max_size=6),
              st.one_of(st.none(), st.floats(0, 1))))


def _image_bytes(case):
    if isinstance(case[0], bytes):
        head, body, ext = case
        return head + body, ext
    index, flips, cut = case
    data = bytearray(VALID_IMAGES[index])
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    if cut is not None:
        data = data[:int(cut * len(data))]
    return bytes(data), EXTENSIONS[index % len(EXTENSIONS)]


@pytest.mark.parametrize("budget", budgets(120))
def test_fuzz_image_files(tmp_path, budget):
    def check(case):
        data, ext = _image_bytes(case)
        p = tmp_path / f"x{ext}"
        p.write_bytes(data)
        try:
            img = images.decode(str(p))
        except BadImageError as e:
            assert str(p) in str(e)
            return
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3

    fuzz(budget, IMAGE_CASES, check)


# -- op bindings, in a subprocess ---------------------------------------------------------------

@pytest.mark.parametrize("budget", budgets(150))
@pytest.mark.parametrize("backend", ["cpu", "emu"])
def test_fuzz_op_bindings(backend, budget):
    if backend not in convnet.backends():
        pytest.skip(f"convnet was built without the {backend} backend")
    examples, derandomize = budget
    seed = 0 if derandomize else int.from_bytes(os.urandom(4), "little")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fuzz_ops.py"), backend,
                        str(examples), str(seed)], env=ENV, cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    tail = "\n".join(r.stderr.splitlines()[-30:])
    assert r.returncode == 0, f"seed {seed}, exit status {r.returncode}:\n{tail}"
    assert f"fuzzed {examples} calls" in r.stderr
