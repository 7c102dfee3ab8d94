"""convnet.Tensor: a float32 (or int32 / uint8) array on one device.

Host tensors are numpy arrays underneath (64-byte aligned, C-contiguous): ``t.numpy()`` is a
zero-copy view and ``from_numpy`` wraps an array without copying. Device tensors (``cuda:N``,
``emu:N``) own a block of the device's caching allocator; moving data between host and devices,
or between two devices (peer-to-peer), is always explicit: ``t.to(device)``.
"""
import math

import numpy as np

from .device import Device, backend

_DTYPES = {np.dtype(np.float32): "f", np.dtype(np.int32): "i", np.dtype(np.uint8): "B"}


def _dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in _DTYPES:
        raise TypeError(f"unsupported dtype {dt}: convnet tensors are float32, int32 or uint8")
    return dt


def _aligned_empty(shape, dtype):
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + nbytes].view(dtype).reshape(shape)


class Tensor:
    """Use convnet.empty / zeros / tensor / from_numpy to make one."""

    __slots__ = ("shape", "dtype", "device", "_array", "_buffer", "_offset", "_desc")

    def __init__(self, shape, dtype, device, array=None, buffer=None, offset=0):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.device = device
        self._array = array  # host: the numpy array
        self._buffer = buffer  # device: the backend Buffer
        self._offset = offset  # device: byte offset into the buffer
        ptr = array.ctypes.data if array is not None else buffer.ptr + offset
        # What the C++ bindings read (see csrc/bindings/tensor_arg.h).
        self._desc = (ptr, self.shape, _DTYPES[dtype], device.kind, device.index)

    # -- properties ----------------------------------------------------------------------------
    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device='{self.device}')"

    def __len__(self):
        return self.shape[0]

    # -- moving data ---------------------------------------------------------------------------
    def numpy(self):
        """Host tensors: the array itself (shared memory). Device tensors: a host copy."""
        if self._array is not None:
            return self._array
        out = _aligned_empty(self.shape, self.dtype)
        if self.nbytes:
            backend(self.device).copy_to_host(out, self._buffer, self._offset)
        return out

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def to(self, device):
        """This tensor on `device` (itself if already there). Device-to-device copies between two
        GPUs are explicit peer-to-peer transfers."""
        device = Device(device)
        if device == self.device:
            return self
        out = empty(self.shape, self.dtype, device)
        out.copy_(self)
        return out

    def copy_(self, src):
        """Copies src (same shape and dtype, any device) into this tensor; returns self."""
        if src.shape != self.shape or src.dtype != self.dtype:
            raise ValueError(f"copy_: source {src.shape} {src.dtype} does not match "
                             f"destination {self.shape} {self.dtype}")
        if not self.nbytes:
            return self
        if self._array is not None and src._array is not None:
            np.copyto(self._array, src._array)
        elif self._array is not None:
            backend(src.device).copy_to_host(self._array, src._buffer, src._offset)
        elif src._array is not None:
            backend(self.device).copy_from_host(self._buffer, self._offset,
                                                np.ascontiguousarray(src._array))
        elif src.device.type != self.device.type:
            self.copy_(Tensor(src.shape, src.dtype, Device("cpu"), array=src.numpy()))
        else:
            backend(self.device).copy_device(self._buffer, self._offset, src._buffer,
                                             src._offset, self.nbytes)
        return self

    # -- views ---------------------------------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = list(shape)
        if shape.count(-1) > 1:
            raise ValueError("reshape: at most one dimension may be -1")
        if -1 in shape:
            rest = math.prod(s for s in shape if s != -1)
            shape[shape.index(-1)] = self.size // rest if rest else 0
        if math.prod(shape) != self.size:
            raise ValueError(f"reshape: cannot view {self.shape} as {tuple(shape)}")
        if self._array is not None:
            return Tensor(shape, self.dtype, self.device, array=self._array.reshape(shape))
        return Tensor(shape, self.dtype, self.device, buffer=self._buffer, offset=self._offset)

    def narrow(self, start, length):
        """Rows start..start+length of the first dimension: a view (contiguous, no copy)."""
        if not 0 <= start <= start + length <= self.shape[0]:
            raise ValueError(f"narrow({start}, {length}) out of range for shape {self.shape}")
        shape = (length,) + self.shape[1:]
        if self._array is not None:
            return Tensor(shape, self.dtype, self.device, array=self._array[start:start + length])
        row = math.prod(self.shape[1:]) * self.dtype.itemsize
        return Tensor(shape, self.dtype, self.device, buffer=self._buffer,
                      offset=self._offset + start * row)


def empty(shape, dtype=np.float32, device="cpu"):
    """An uninitialised tensor (device memory from the emulated backend holds NaN)."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    dtype, device = _dtype(dtype), Device(device)
    if device.type == "cpu":
        return Tensor(shape, dtype, device, array=_aligned_empty(shape, dtype))
    mod = backend(device)
    buf = mod.Buffer(max(1, math.prod(shape) * dtype.itemsize), device.index)
    return Tensor(shape, dtype, device, buffer=buf)


def full(shape, value, dtype=np.float32, device="cpu"):
    t = empty(shape, dtype, device)
    if t.device.type == "cpu" or t.dtype != np.float32:
        if t.device.type == "cpu":
            t._array.fill(value)
        else:
            t.copy_(tensor(np.full(t.shape, value, t.dtype)))
    else:
        backend(t.device).fill(t, float(value))
    return t


def zeros(shape, dtype=np.float32, device="cpu"):
    return full(shape, 0, dtype, device)


def tensor(data, device="cpu", dtype=None):
    """A new tensor holding a copy of `data` (array-like). Floating data becomes float32 and
    integer data int32 unless `dtype` says otherwise."""
    arr = np.asarray(data)
    if dtype is None:
        if arr.dtype.kind == "f":
            dtype = np.float32
        elif arr.dtype.kind in "iu" and arr.dtype != np.uint8:
            if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
                raise ValueError("integer data does not fit in int32")
            dtype = np.int32
        else:
            dtype = arr.dtype
    dtype = _dtype(dtype)
    host = _aligned_empty(arr.shape, dtype)
    np.copyto(host, arr, casting="unsafe")
    t = Tensor(arr.shape, dtype, Device("cpu"), array=host)
    return t.to(device)


def from_numpy(arr):
    """A host tensor sharing memory with `arr`, which must be C-contiguous and of a supported
    dtype (no copy is ever made behind your back)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy array, got {type(arr).__name__}")
    dtype = _dtype(arr.dtype)
    if not arr.flags.c_contiguous:
        raise ValueError(f"from_numpy: array of shape {arr.shape} is not C-contiguous "
                         "(use np.ascontiguousarray, which copies)")
    return Tensor(arr.shape, dtype, Device("cpu"), array=arr)
