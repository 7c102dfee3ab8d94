"""Run a CPU test on every SIMD path this machine supports (portable, avx2, avx512): the kernels
compiled per path are chosen at run time, and convnet._cpu.set_isa forces a lower one."""
import contextlib

import pytest

import convnet

PATHS = ["portable", "avx2", "avx512"]


@contextlib.contextmanager
def cpu_isa(path):
    """Select `path` for the block (skipping the test when the CPU cannot run it)."""
    cpu = convnet.device.module_for("cpu")
    if PATHS.index(path) > PATHS.index(cpu.isa_supported()):
        pytest.skip(f"this CPU cannot run the {path} path")
    previous = cpu.isa()
    cpu.set_isa(path)
    try:
        yield
    finally:
        cpu.set_isa(previous)


@contextlib.contextmanager
def cpu_threads(count):
    """Run the block with the CPU backend on `count` threads; its previous count is restored."""
    cpu = convnet.device.module_for("cpu")
    previous = cpu.num_threads()
    cpu.set_num_threads(count)
    try:
        yield
    finally:
        cpu.set_num_threads(previous)


@pytest.fixture(params=PATHS)
def isa(request):
    """The test body runs with the CPU backend on each SIMD path in turn."""
    with cpu_isa(request.param):
        yield request.param
