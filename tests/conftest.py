"""Shared fixtures: `device` runs a test on every backend — the CPU backend, the CUDA kernel
sources under emulation in two thread orders (a race shows up as a difference between them), and a
real GPU when one is present (skipped with the reason otherwise)."""
import numpy as np
import pytest

import convnet

EMU_ORDERS = ["forward", "reverse"]


def _device_params():
    params = [pytest.param("cpu", id="cpu")]
    for order in EMU_ORDERS:
        params.append(pytest.param(f"emu:0/{order}", id=f"emu-{order}"))
    params.append(pytest.param("cuda:0", id="cuda"))
    return params


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs on cuda:0 (tools/gpu_check.py selects -m gpu)")


def pytest_collection_modifyitems(items):
    """Marks every test parametrised on cuda:0 `gpu`, so a GPU run can select exactly them."""
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and str(spec.params.get("device", "")).startswith("cuda"):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(params=_device_params())
def device(request):
    spec = request.param
    if spec.startswith("emu"):
        if "emu" not in convnet.backends():
            pytest.skip("convnet was built without the emulated backend")
        dev, order = spec.split("/")
        emu = convnet.device.module_for("emu")
        previous = emu.thread_order()
        emu.set_thread_order(order)
        yield dev
        emu.set_thread_order(previous)
        return
    if spec.startswith("cuda") and not convnet.cuda.is_available():
        pytest.skip(f"no GPU: {convnet.cuda.unavailable_reason()}")
    yield spec


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
