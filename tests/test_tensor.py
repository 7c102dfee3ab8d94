import subprocess
import sys

import numpy as np
import pytest

import convnet


def test_backends_lists_cpu_and_emu():
    b = convnet.backends()
    assert "cpu" in b and "emu" in b


def test_roundtrip_and_dtypes(device):
    dev = device
    for dtype, data in [(np.float32, np.arange(7.5, step=0.5)), (np.int32, np.arange(-3, 9)),
                        (np.uint8, np.arange(200, 256, dtype=np.uint8))]:
        t = convnet.tensor(data, device=dev, dtype=dtype)
        assert t.dtype == np.dtype(dtype) and t.shape == data.shape and str(t.device) == dev
        np.testing.assert_array_equal(t.numpy(), data.astype(dtype))


def test_host_tensor_is_zero_copy_and_aligned():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = convnet.from_numpy(a)
    a[0, 0] = 42
    assert t.numpy()[0, 0] == 42
    e = convnet.empty((5, 3))
    assert e.numpy().ctypes.data % 64 == 0


def test_from_numpy_refuses_what_it_cannot_share():
    with pytest.raises(ValueError, match="not C-contiguous"):
        convnet.from_numpy(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="unsupported dtype float64"):
        convnet.from_numpy(np.zeros(3))


def test_reshape_narrow_views(device):
    t = convnet.tensor(np.arange(24, dtype=np.float32).reshape(4, 6), device=device)
    np.testing.assert_array_equal(t.reshape(2, -1).numpy(), np.arange(24).reshape(2, 12))
    np.testing.assert_array_equal(t.narrow(1, 2).numpy(), np.arange(6, 18).reshape(2, 6))
    with pytest.raises(ValueError, match="cannot view"):
        t.reshape(5, 5)
    with pytest.raises(ValueError, match="out of range"):
        t.narrow(3, 2)


def test_copies_between_devices():
    if "emu" not in convnet.backends():
        pytest.skip("no emulated backend")
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    a = convnet.tensor(x, device="emu:0")
    b = a.to("emu:1")  # explicit peer-to-peer copy between two (emulated) devices
    assert str(b.device) == "emu:1"
    np.testing.assert_array_equal(b.to("cpu").numpy(), x)
    c = convnet.zeros((3, 5), device="emu:1").copy_(a)
    np.testing.assert_array_equal(c.numpy(), x)


def test_fresh_device_memory_is_poisoned_under_emulation():
    if "emu" not in convnet.backends():
        pytest.skip("no emulated backend")
    assert np.isnan(convnet.empty(17, device="emu:0").numpy()).all()


def test_device_errors_are_clear():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        convnet.empty(3, device="gpu")
    with pytest.raises(convnet.DeviceError, match="emu:9 does not exist"):
        convnet.empty(3, device="emu:9")
    if not convnet.cuda.is_available():
        with pytest.raises(convnet.DeviceError, match="cuda:0"):
            convnet.empty(3, device="cuda:0")
        assert convnet.cuda.unavailable_reason()


def test_ops_refuse_mixed_devices():
    if "emu" not in convnet.backends():
        pytest.skip("no emulated backend")
    a = convnet.zeros(4, device="emu:0")
    b = convnet.zeros(4, device="emu:1")
    with pytest.raises(ValueError, match="different devices"):
        convnet.ops.add_(a, b)
    with pytest.raises(ValueError, match="is on cpu but this is the emu backend"):
        convnet.ops.add_(a, convnet.zeros(4))


def test_cuda_status_without_gpu_does_not_crash():
    # In a subprocess so that a crash would show as a failed test, not a dead test run.
    code = ("import convnet; print(convnet.cuda.is_available(), convnet.cuda.device_count());"
            "print(convnet.cuda.unavailable_reason())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    if first.startswith("False"):
        assert first == "False 0" and out.stdout.splitlines()[1]
