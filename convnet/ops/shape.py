"""Output sizes (cuda-convnet rounds up; csrc/common/shape.h is the one definition)."""
from ..device import module_for

__all__ = ["conv_out_size", "pool_out_size"]


def conv_out_size(img, filter_size, padding=0, stride=1):
    """1 + ceil((2*padding + img - filter_size) / stride): 224, 11, 0, 4 -> 55."""
    return module_for("cpu").conv_out_size(int(img), int(filter_size), int(padding), int(stride))


def pool_out_size(img, size, stride, start=0):
    """1 + ceil((img - start - size) / stride): 55, 3, 2 -> 27."""
    return module_for("cpu").pool_out_size(int(img), int(size), int(stride), int(start))
