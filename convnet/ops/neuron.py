"""Neurons (activation functions), forward and backward: cuda-convnet's set.

Kinds, spelled as cuda-convnet's layer files write them (``neuron=relu``, ``neuron=tanh[a,b]``):

=============  ===================  ===========================  ==================
kind           f(x)                 f'(x), computed from          backward reads
=============  ===================  ===========================  ==================
ident          x                    1                             --
relu           max(x, 0)            y > 0                         y
logistic       1 / (1 + e^-x)       y (1 - y)                     y
tanh[a,b]      a tanh(b x)          (b/a)(a - y)(a + y), a != 0   y
brelu[a]       min(max(x, 0), a)    0 < y < a, a > 0              y
softrelu       log(1 + e^x)         1 - e^-y                      y
abs            abs(x)               sign(x) (0 at 0)              x
square         x^2                  2 x                           x
sqrt           sqrt(x)              1 / (2 y)                     y
linear[a,b]    a x + b              a                             --
=============  ===================  ===========================  ==================

Elementwise: any shape and layout. The backward takes the forward input x and output y; pass
None for the one the kind does not read (relu only needs y, so x can be freed or overwritten).
"""
import re

import numpy as np

from ..device import module_for
from ..tensor import empty
from ._dispatch import backend_of, device_of

__all__ = ["neuron_bwd", "neuron_fwd", "neuron_kinds", "parse_neuron"]

# How many bracketed parameters each kind takes.
_NPARAMS = {"ident": 0, "relu": 0, "logistic": 0, "tanh": 2, "brelu": 1, "softrelu": 0,
            "abs": 0, "square": 0, "sqrt": 0, "linear": 2}
_SPEC = re.compile(r"^\s*([a-z]+)\s*(?:\[([^\]]*)\])?\s*$")


_codes = {}


def neuron_kinds():
    """Kind names in the order of the backends' integer codes."""
    return list(module_for("cpu").neuron_kinds())


def parse_neuron(spec, a=0.0, b=0.0):
    """'tanh[1.7159,0.6667]' -> ('tanh', 1.7159, 0.6667). A kind without brackets takes a and b
    from the arguments; with brackets it must give exactly its parameters."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if not m or m.group(1) not in _NPARAMS:
        raise ValueError(f"unknown neuron {spec!r}: expected one of "
                         + ", ".join(k + ("[a,b]" if n == 2 else "[a]" if n == 1 else "")
                                     for k, n in _NPARAMS.items()))
    kind, params = m.group(1), m.group(2)
    if params is None:
        return kind, float(a), float(b)
    try:
        values = [float(v) for v in params.split(",")] if params.strip() else []
    except ValueError:
        raise ValueError(f"neuron {spec!r}: parameters must be numbers") from None
    if len(values) != _NPARAMS[kind]:
        raise ValueError(f"neuron {spec!r}: {kind} takes {_NPARAMS[kind]} parameter(s), "
                         f"got {len(values)}")
    values += [0.0] * (2 - len(values))
    return kind, values[0], values[1]


def _code(kind):
    if not _codes:
        _codes.update((k, i) for i, k in enumerate(neuron_kinds()))
    return _codes[kind]


def _out(out, like):
    if out is not None:
        return out
    return empty(like.shape, np.float32, device_of(like))


def neuron_fwd(x, kind, a=0.0, b=0.0, out=None):
    """y = f(x). `out` may be x (in place)."""
    kind, a, b = parse_neuron(kind, a, b)
    y = _out(out, x)
    backend_of(x).neuron_fwd(x, y, _code(kind), a, b)
    return y


def neuron_bwd(dy, x, y, kind, a=0.0, b=0.0, out=None, accumulate=False):
    """dx = dy * f'(x); with accumulate, out += dy * f'(x). `out` may be dy."""
    kind, a, b = parse_neuron(kind, a, b)
    if accumulate and out is None:
        raise ValueError("neuron_bwd: accumulate=True needs out (the gradient to add to)")
    dx = _out(out, dy)
    backend_of(dy).neuron_bwd(dy, x, y, dx, _code(kind), a, b, bool(accumulate))
    return dx
