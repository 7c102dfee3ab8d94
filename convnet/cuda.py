"""CUDA availability, in the words a user needs when it is missing."""
from .device import DeviceError, module_for


def _status():
    try:
        mod = module_for("cuda")
    except DeviceError as e:
        return 0, str(e)
    return mod.device_count()


def is_available():
    """True when convnet was built with CUDA and a driver and a GPU are present."""
    return _status()[0] > 0


def device_count():
    return _status()[0]


def unavailable_reason():
    """Why no GPU can be used ('' when one can): not built with CUDA, no driver, or no device."""
    n, reason = _status()
    return "" if n > 0 else reason
