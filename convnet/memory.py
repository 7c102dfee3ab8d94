"""The memory a net needs, estimated from its inferred shapes before anything is allocated, so
that a config asking for more than the machine holds is refused in one line (a ConfigError
saying how much it needs and how much there is) rather than ending in a MemoryError, an
out-of-memory kill or swapping, part way through building the net.

The estimate is a lower bound: every weight tensor three times (the weights, their momentum and
their gradient), and per image of the batch every layer's output (but the data layers' on
CPU devices, which read the caller's batch), the gradient of those outputs
that receive one, and a neuron's separate input and gradient where the neuron cannot work in
place; float32 throughout. Buffers of a few layers (LRN denominators, dropout masks, the winners
of trained max pools, transfer buffers between devices) come on top. It is checked against the host's physical memory for the
devices whose memory is the host's (``cpu``, ``emu``); a CUDA device's allocator reports for
itself.
"""
import math
import os

from .config import ConfigError

__all__ = ["needed_bytes", "host_memory_bytes", "check_fits", "gib"]

FLOAT_BYTES = 4


def needed_bytes(net):
    """{device: bytes} the net needs at least (see the module docstring); call after its shapes
    are inferred and its backward pass planned."""
    out = {}
    for L in net.order:
        n = math.prod(L.out_shape) if L.out_shape else 1
        # CPU devices read the batch where the caller put it: no buffer for the data layers.
        buffers = 0 if L.is_cost or (L.is_data and not net._async) else 1
        buffers += L.name in net.has_dy
        if getattr(L, "neuron", None) and not L.neuron_in_place:
            buffers += 2
        params = sum(3 * math.prod(p.shape) for p in L.params)
        out[L.device] = out.get(L.device, 0) + FLOAT_BYTES * (buffers * n * net.batch_size
                                                              + params)
    return out


def host_memory_bytes():
    """The machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n):
    return f"{n / 2**30:,.1f} GiB"


def check_fits(net):
    """Raises ConfigError when the host-memory devices of `net` need more than the machine has."""
    need = sum(b for d, b in needed_bytes(net).items() if d.type in ("cpu", "emu"))
    have = host_memory_bytes()
    if have is not None and need > have:
        biggest = max((L for L in net.order), key=lambda L: math.prod(L.out_shape or (1,))
                      + sum(math.prod(p.shape) for p in L.params))
        raise ConfigError(f"the net needs at least {gib(need)} of memory at batch size "
                          f"{net.batch_size} (weights, momenta, gradients, activations), this "
                          f"machine has {gib(have)}; the largest layer is {biggest.name!r} "
                          f"(output {'x'.join(map(str, biggest.out_shape))})",
                          net.config.def_path)
