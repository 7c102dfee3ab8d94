"""Devices and the backend modules behind them.

A device string names a backend and an index:
  ``cpu``      the CPU backend (convnet._cpu): SIMD + threads, the fast path on a laptop;
  ``cpu:N``    logical CPU device N (``cpu`` is ``cpu:0``): a net with layers on several runs
               each device's schedule on its own worker thread, bound to its share of the cores;
               there are as many logical CPU devices as cores (at least two), or
               CONVNET_CPU_DEVICES;
  ``cuda:N``   GPU N (convnet._cuda, built when nvcc was found at install time);
  ``emu:N``    emulated GPU N (convnet._emu): the CUDA kernel sources compiled for the CPU against
               convnet's SIMT emulation. Slow; for checking and stepping through kernel code.
"""
import importlib
import os

_KINDS = {"cpu": 0, "cuda": 1, "emu": 2}
_MODULES = {"cpu": "convnet._cpu", "cuda": "convnet._cuda", "emu": "convnet._emu"}
_loaded = {}


class DeviceError(RuntimeError):
    """A device was asked for that this installation or machine cannot provide."""


class Device:
    __slots__ = ("type", "index")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string like 'cpu', 'cuda:0', 'emu:1', got {spec!r}")
        kind, _, idx = spec.strip().partition(":")
        if kind not in _KINDS:
            raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'cpu:N', 'cuda:N' or "
                             "'emu:N'")
        try:
            self.index = int(idx) if idx else 0
        except ValueError:
            raise ValueError(f"bad device index in {spec!r}") from None
        if self.index < 0:
            raise ValueError(f"bad device index in {spec!r}")
        self.type = kind

    @property
    def kind(self):
        return _KINDS[self.type]

    def __str__(self):
        return "cpu" if self.type == "cpu" and self.index == 0 else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device('{self}')"

    def __eq__(self, other):
        try:
            other = Device(other)
        except (TypeError, ValueError):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self):
        return hash((self.type, self.index))


def _source_tree_hint():
    """Why a backend may be missing when `import convnet` found an unbuilt source tree (run from
    the checkout after a regular install, the source package shadows the installed one)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(os.path.dirname(here), "pyproject.toml")):
        return ""
    return (f" (convnet was imported from the source tree {here}, which is not built: run "
            "`pip install -e .` there, or use the installed package from another directory)")


def module_for(kind):
    """The extension module of a backend, or DeviceError saying why it is missing."""
    if kind in _loaded:
        return _loaded[kind]
    try:
        mod = importlib.import_module(_MODULES[kind])
    except ImportError as e:
        hint = (" (convnet was built without CUDA: install with nvcc on PATH, or CONVNET_CUDA=ON)"
                if kind == "cuda" else _source_tree_hint())
        raise DeviceError(f"the {kind} backend is not available{hint}: {e}") from None
    _loaded[kind] = mod
    return mod


def backend(device):
    """Checks that `device` exists and returns its backend module."""
    dev = Device(device)
    try:
        mod = module_for(dev.type)
    except DeviceError as e:
        raise DeviceError(f"{dev} is not available: {e}") from None
    if dev.type == "cpu":
        # cpu:0 always exists; the count (a system call) is read only past it: the ops look up
        # their backend on every call, dozens of times per training step.
        count = cpu_device_count() if dev.index > 0 else 1
        if dev.index >= count:
            raise DeviceError(f"{dev} does not exist: {count} logical CPU devices (one per core, "
                              f"at least two, or CONVNET_CPU_DEVICES), cpu:0..cpu:{count - 1}")
    else:
        count, reason = mod.device_count()
        if count == 0:
            raise DeviceError(f"{dev} is not available: {reason}")
        if dev.index >= count:
            raise DeviceError(f"{dev} does not exist: {count} {dev.type} device(s), "
                              f"{dev.type}:0..{dev.type}:{count - 1}")
    return mod


def cpu_device_count():
    """Logical CPU devices: one per core this process may use, at least two; or
    CONVNET_CPU_DEVICES of them (a four-replica config on a two-core machine: the devices then
    share the cores round robin)."""
    text = os.environ.get("CONVNET_CPU_DEVICES")
    if text:
        if not text.isdigit() or int(text) < 1:
            raise DeviceError(f"CONVNET_CPU_DEVICES={text}: expected a whole number >= 1")
        return int(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, cores or 1)


def backends():
    """Names of the backends this installation has: 'cpu', 'emu', and 'cuda' when built."""
    out = []
    for kind in ("cpu", "emu", "cuda"):
        try:
            module_for(kind)
            out.append(kind)
        except DeviceError:
            pass
    return out
