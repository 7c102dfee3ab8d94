"""What every convnet command shares: argument parsing that reports a mistake as one line and exit
code 2, checked integer arguments, ``--version``, and the check of convnet's environment
variables before any work starts."""
import argparse
import os
import sys

__all__ = ["UserError", "Parser", "int_at_least", "check_environment", "version_text",
           "prog_name", "error_prefix"]


class UserError(Exception):
    """A mistake the user can fix; printed as one line without a traceback (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``PROG: error: MESSAGE (see PROG --help)``, exit 2) and a
    ``--version`` option."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=version_text(),
                          help="print convnet's version and backends, and exit")

    def error(self, message):
        self.exit(2, f"{error_prefix(self.prog)} {message} (see {self.prog} --help)\n")


def int_at_least(lo):
    """An argparse type: an integer >= lo, named in the error message."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def prog_name(module, script):
    """The name the user typed: the console script's, or ``python -m MODULE``."""
    return script if os.path.basename(sys.argv[0]) == script else f"python -m {module}"


def error_prefix(prog):
    """``convnet.train: error:`` (or the console script's name): the start of every error line."""
    return f"{prog.replace('python -m ', '')}: error:"


def version_text():
    from . import __version__
    return f"convnet {__version__} (Python {sys.version.split()[0]})"


def check_environment():
    """Reads convnet's environment variables through the backends that use them, so that a bad
    value is reported at start (naming the variable) rather than at the first kernel launch."""
    from .device import DeviceError, module_for
    readers = [("CONVNET_CPU_ISA", "cpu", lambda m: m.isa()),
               ("CONVNET_WINOGRAD", "cpu", lambda m: m.winograd_setting()),
               ("CONVNET_SIMT_ORDER", "emu", lambda m: m.thread_order()),
               ("CONVNET_EMU_DEVICES", "emu", lambda m: m.device_count())]
    for name, kind, read in readers:
        value = os.environ.get(name)
        if not value:
            continue
        try:
            read(module_for(kind))
        except DeviceError:
            continue  # that backend is not built: the variable has no effect
        except (RuntimeError, ValueError) as e:
            text = str(e)
            raise UserError(text if name in text else f"{name}={value}: {text}") from None
