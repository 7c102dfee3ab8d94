"""The layer configs that ship with convnet (layers/*.cfg of the source tree), found by name.

An installed package holds them in convnet/configs/ (setup.py copies them there); a source checkout
or an editable install reads layers/ beside the package. A command-line CONFIG argument is a path
when such a file exists, else the name of a shipped config (``alexnet`` or ``alexnet.cfg``).
"""
import os

__all__ = ["config_dirs", "shipped_configs", "resolve_config", "DESIGN_SIZE"]

_PKG = os.path.dirname(os.path.abspath(__file__))

# The input side each shipped config was designed for (its header comment says so): a smaller
# input still runs (sizes round up as in cuda-convnet) but is not the net of the paper.
DESIGN_SIZE = {"alexnet": 224, "cifar18": 32, "cifar-local": 32, "tiny": 12, "tiny-towers": 12}


def config_dirs():
    """Where shipped configs are looked for: the installed copy, then the source tree's layers/."""
    dirs = [os.path.join(_PKG, "configs"), os.path.join(os.path.dirname(_PKG), "layers")]
    return [d for d in dirs if os.path.isdir(d)]


def shipped_configs():
    """{name: path} of the shipped configs (the first directory that has a name wins)."""
    out = {}
    for d in config_dirs():
        for f in sorted(os.listdir(d)):
            if f.endswith(".cfg"):
                out.setdefault(f[:-len(".cfg")], os.path.join(d, f))
    return dict(sorted(out.items()))


def resolve_config(arg):
    """The path of the config `arg` names, or None (a path that does not exist and no shipped
    config of that name)."""
    if os.path.exists(arg):
        return arg  # a path (a directory is reported as such by the config reader)
    if os.sep in arg or (os.altsep and os.altsep in arg):
        return None
    name = arg[:-len(".cfg")] if arg.endswith(".cfg") else arg
    return shipped_configs().get(name)
