"""Layers joining several inputs: eltsum (weighted sum), concat (along channels) and pass.

concat stacks inputs (C_i, H, W, N) into (sum C_i, H, W, N) — FC inputs (F_i, N) likewise. With
the channel index outermost each input is one contiguous block of the output, so both directions
are plain copies.
"""
import math

from .. import ops
from .base import Layer, register


def _coeffs(spec, key):
    try:
        return [float(c) for c in spec.text(key).split(",")]
    except ValueError:
        raise spec.error(key, f"expected a comma-separated list of numbers, got "
                              f"{spec.text(key)!r}") from None


@register
class EltSumLayer(Layer):
    TYPE = "eltsum"
    KEYS = {"coeffs": (_coeffs, None)}
    INPUTS = (1, 64)

    def infer(self, in_shapes):
        for i, s in enumerate(in_shapes[1:], 1):
            if s != in_shapes[0]:
                raise self.shape_error(f"shape {s} differs from {self.input_names[0]!r}'s "
                                       f"{in_shapes[0]}", i)
        coeffs = self.cfg["coeffs"] or [1.0] * len(in_shapes)
        if len(coeffs) != len(in_shapes):
            raise self.spec.error("coeffs", f"{len(coeffs)} coefficients for "
                                            f"{len(in_shapes)} inputs")
        self.coeffs = coeffs
        return in_shapes[0]

    def flops(self):
        return 2 * len(self.coeffs) * math.prod(self.out_shape)

    def fwd(self, xs, y, n, ctx):
        ops.copy_(y, xs[0])
        ops.scale_(y, self.coeffs[0])
        for c, x in zip(self.coeffs[1:], xs[1:]):
            ops.add_(y, x, c)

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        for c, dx, acc in zip(self.coeffs, dxs, accs):
            if dx is None:
                continue
            if not acc:
                ops.fill_(dx, 0.0)
            ops.add_(dx, dy, c)


@register
class ConcatLayer(Layer):
    TYPE = "concat"
    INPUTS = (1, 64)

    def infer(self, in_shapes):
        rest = in_shapes[0][1:]
        for i, s in enumerate(in_shapes[1:], 1):
            if s[1:] != rest:
                raise self.shape_error(f"shape {s} cannot be stacked on {self.input_names[0]!r}'s "
                                       f"{in_shapes[0]} (all but the first dimension must match)",
                                       i)
        self.sizes = [s[0] for s in in_shapes]
        return (sum(self.sizes),) + rest

    def _parts(self, t):
        off = 0
        for c in self.sizes:
            yield t.narrow(off, c)
            off += c

    def fwd(self, xs, y, n, ctx):
        for part, x in zip(self._parts(y), xs):
            part.copy_(x)

    def bwd(self, dy, xs, y, dxs, accs, n, ctx):
        for part, dx, acc in zip(self._parts(dy), dxs, accs):
            if dx is None:
                continue
            if acc:
                ops.add_(dx, part)
            else:
                dx.copy_(part)


@register
class PassLayer(ConcatLayer):
    """cuda-convnet2's pass-through layer: its inputs side by side, as concat. In the hybrid
    scheme it gathers the outputs of model-parallel layers on other devices onto its own (the
    executor copies what crosses devices)."""
    TYPE = "pass"
