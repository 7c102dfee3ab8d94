"""convnet: cuda-convnet revived. AlexNet-class convnets on hand-written kernels for the CPU
(SIMD + threads) and CUDA, with the CUDA sources also runnable on any CPU through convnet's SIMT
emulation (device 'emu:N')."""
from . import cuda, ops
from .device import Device, DeviceError, backends
from .tensor import Tensor, empty, from_numpy, full, tensor, zeros

__version__ = "0.1.0"
__all__ = ["Device", "DeviceError", "Tensor", "backends", "cuda", "empty", "from_numpy", "full",
           "ops", "tensor", "zeros"]
