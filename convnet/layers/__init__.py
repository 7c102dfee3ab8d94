"""Layer types, one class each, found by the ``type=`` string of a config section.

Supported: data, conv, fc, pool, cmrnorm, rnorm, neuron, dropout, dropout2, softmax,
cost.logreg, eltsum, concat, pass. Adding a type = one class with @register in a module listed here.
"""
from ..config import ConfigError
from . import combine, io, simple, weights  # noqa: F401  (registers the types)
from .base import REGISTRY, BatchBuffer, Layer, Param

__all__ = ["BatchBuffer", "Layer", "Param", "REGISTRY", "make_layer"]


def make_layer(spec, neurons):
    """The layer object for a parsed config section (unknown types are errors naming them)."""
    kind = spec.text("type")
    cls = REGISTRY.get(kind)
    if cls is None:
        raise spec.error("type", f"layer type {kind!r} is not supported; supported types: "
                                 f"{', '.join(sorted(REGISTRY))}")
    return cls(spec, neurons)
