"""Random arguments into every binding of a backend module: ``python tests/fuzz_ops.py BACKEND
EXAMPLES [SEED]``, run by tests/test_fuzz.py in a subprocess, so that a crash (a segfault, an
abort) or a hang ends that process, not the test run, and is reported with the call that caused
it (each call is printed to stderr before it is made).

Each binding's parameters are read from its signature (pybind11's docstring) and drawn by type:
tensors of random dtype (float32, int32, uint8, float64), rank 0-4 and small or empty
dimensions (now and then an empty one with a dimension above 2^31), on the module's device or
another; integers from small to beyond 64 bits, negative ones included; floats including NaN
and infinities; strings from the names the bindings know plus junk; device buffers of 0 to 64
bytes where a binding takes one. A call must return or raise
ValueError or TypeError (a wrong argument) or MemoryError; anything else, a crash or a call
running past its time limit fails.
"""
import faulthandler
import re
import sys

import numpy as np
from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings
from hypothesis import strategies as st

import convnet
from convnet.device import module_for

# Not fuzzed: the benchmarks' timing probes (their loop counts are arguments by design), the
# executor's stream and event plumbing, which takes raw handles (an integer that is not a handle
# cannot be told from one; only convnet/streams.py passes them), and the emulator's allocator
# test switches (turning the hold-back off plants a bug on purpose). Their device indices are
# checked, and fuzzed through the bindings that create the handles.
SKIP = {"measure_fma_peak", "time_with_events", "event_destroy", "event_record",
        "stream_wait_event", "stream_synchronize", "copy_device_async", "event_synchronize",
        "copy_from_host_async", "set_allocator_checks"}
ALLOWED = (ValueError, TypeError, MemoryError)
CALL_SECONDS = 20  # per call; a hang is reported with every thread's stack

NAMES = ["max", "avg", "relu", "tanh", "conv_fwd", "conv_bwd_data", "conv_bwd_weights",
         "fc_fwd", "fc_bwd_data", "fc_bwd_weights", "forward", "reverse", "random:3", "sync",
         "avx2", "avx512", "portable", "", "\x00", "é" * 3, "x" * 300]
INTS = st.one_of(st.integers(-3, 9), st.sampled_from([2**31 - 1, 2**31, -2**31, 2**32 + 1,
                                                      2**63 - 1, -2**63, 2**64 - 4, 2**64,
                                                      10**30]),
                 st.integers(-2**40, 2**40))
FLOATS = st.one_of(st.floats(-4, 4), st.sampled_from([0.0, -0.0, float("nan"), float("inf"),
                                                      -float("inf"), 1e38, 3e38, 1e-45]))
DTYPES = [np.float32, np.float32, np.int32, np.uint8, np.float64]


def _split_params(sig):
    """'a: Tensor, m: Optional[int] = None' -> [('a', 'Tensor'), ('m', 'Optional[int]')],
    splitting at commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in sig + ",":
        depth += {"[": 1, "]": -1, "(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            if cur.strip():
                name, _, ty = cur.strip().partition(":")
                out.append((name.strip(), ty.split("=")[0].strip()))
            cur = ""
        else:
            cur += ch
    return out


def bindings(mod):
    """{name: [(param, type text)]} of the module's functions, from their signatures."""
    out = {}
    for name in sorted(dir(mod)):
        fn = getattr(mod, name)
        if name.startswith("_") or name in SKIP or not callable(fn) or not fn.__doc__:
            continue
        m = re.match(rf"{name}\((.*)\) ->", fn.__doc__.splitlines()[0])
        if m:
            out[name] = _split_params(m.group(1))
    return out


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    if draw(st.integers(0, 30)) == 0:
        return np.zeros((3, 2**31 + 1, 0, 1), dtype)  # empty, with a dimension above int32
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 1, 2, 3, 4, 5, 7, 10]), max_size=4)))
    a = draw(st.sampled_from([np.zeros, np.ones]))(shape, dtype)
    if draw(st.booleans()) and a.size > 1:
        a = a[..., ::2] if a.ndim else a  # not C-contiguous
    return a


def tensors(device):
    def place(a):
        if device == "cpu" or a.dtype == np.float64 or not a.flags.c_contiguous or max(
                a.shape, default=0) > 2**31:
            return a
        return convnet.tensor(a, device=device)
    return arrays().map(place)


def value(ty, device, mod):
    t = ty.lower()
    if "callable" in t or "function" in t:
        return st.just(lambda: None)
    base = st.nothing()
    if "tensor" in t or "object" in t or "any" in t:
        base = base | tensors(device) | st.lists(tensors(device), max_size=3)
    if "ndarray" in t:
        base = base | arrays()
    if "buffer" in t:  # device memory of the emulated / CUDA modules, 0 to 64 bytes
        base = base | st.integers(0, 64).map(lambda n: mod.Buffer(n, 0))
    if "bool" in t:
        base = base | st.booleans()
    if "float" in t:
        base = base | FLOATS
    if "int" in t or "index" in t:
        base = base | INTS
    if "str" in t:
        base = base | st.sampled_from(NAMES)
    if "list" in t or "sequence" in t or "tuple" in t or "array" in t:
        base = base | st.lists(st.one_of(INTS, FLOATS), max_size=6)
    if "optional" in t or "none" in t:
        base = base | st.none()
    # Now and then a value of the wrong kind altogether.
    return st.one_of(base, base, base, st.sampled_from([None, "x", 1.5, -1, [], object()]))


def main(backend, examples, seed=0):
    faulthandler.enable()
    mod = module_for(backend)
    device = {"cpu": "cpu", "emu": "emu:0", "cuda": "cuda:0"}[backend]
    table = bindings(mod)
    names = sorted(table)
    print(f"{len(names)} bindings of {backend}: {', '.join(names)}", file=sys.stderr)

    @st.composite
    def calls(draw):
        name = draw(st.sampled_from(names))
        args = [draw(value(ty, device, mod)) for _, ty in table[name]]
        return name, args

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(calls())
    def one_call(call):
        name, args = call
        desc = ", ".join(f"{type(a).__name__}{getattr(a, 'shape', '')}"
                         f"{'' if hasattr(a, 'shape') else '=' + repr(a)[:40]}" for a in args)
        print(f"call {name}({desc})", file=sys.stderr, flush=True)
        faulthandler.dump_traceback_later(CALL_SECONDS, exit=True)
        try:
            getattr(mod, name)(*args)
        except ALLOWED:
            pass
        finally:
            faulthandler.cancel_dump_traceback_later()

    one_call()
    print(f"fuzzed {examples} calls of {len(names)} bindings: no crash", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
