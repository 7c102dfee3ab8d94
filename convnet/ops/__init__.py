"""The op API: one function per op, the same on every device. Each takes convnet Tensors (host
ops also take numpy arrays) and dispatches to the backend of the tensors' device.

Each op family is one module here listing its functions in __all__; they are all re-exported, so
adding a family touches no other file."""
import importlib
import pkgutil

__all__ = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):
        continue
    _mod = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in _mod.__all__:
        globals()[_name] = getattr(_mod, _name)
    __all__ += list(_mod.__all__)
