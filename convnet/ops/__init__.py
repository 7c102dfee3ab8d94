"""The op API: one function per op, the same on every device. Each takes convnet Tensors (host
ops also take numpy arrays) and dispatches to the backend of the tensors' device."""
from .elementwise import add_, copy_, fill_, scale_

__all__ = ["add_", "copy_", "fill_", "scale_"]
