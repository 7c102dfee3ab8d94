"""Layer types, one class each, found by the ``type=`` string of a config section.

Supported: data, conv, local, fc, pool, cmrnorm, rnorm, cnorm, neuron, dropout, dropout2,
softmax, cost.logreg, eltsum, concat, pass. Adding a type = one class with @register in a module
listed here.
"""
from ..config import unsupported
from . import combine, io, simple, weights  # noqa: F401  (registers the types)
from .base import REGISTRY, BatchBuffer, Layer, Param

__all__ = ["BatchBuffer", "Layer", "Param", "REGISTRY", "make_layer"]


# Layer types of cuda-convnet and cuda-convnet2 that convnet does not implement.
CUDA_CONVNET_TYPES = frozenset({
    "blur", "cmpool", "cost.bce", "cost.crossent", "cost.dce", "cost.sum2", "crop", "eltmax",
    "href", "nailbed", "resize", "rgb2lab", "rgb2yuv", "rscale", "sfc", "sum"})


def make_layer(spec, neurons):
    """The layer object for a parsed config section (unknown types are errors naming them)."""
    kind = spec.text("type")
    cls = REGISTRY.get(kind)
    if cls is None:
        known = f"supported types: {', '.join(sorted(REGISTRY))}"
        if kind in CUDA_CONVNET_TYPES:
            raise unsupported(spec, "type", f"layer type {kind!r}", known)
        raise spec.error("type", f"unknown layer type {kind!r} (a typo?); {known}")
    return cls(spec, neurons)
