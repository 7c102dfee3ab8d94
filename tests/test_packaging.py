"""Packaging: the build tree survives pip's temporary build environments (a stale CMake cache is
dropped, object files kept), and the shipped configs are the source tree's layers/*.cfg. The
slow tests run the real thing: a second `pip install .` in one checkout, and an sdist that builds
and installs into a fresh venv, used from another directory (CUDA off, to keep it short)."""
import glob
import importlib.util
import os
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_setup():
    spec = importlib.util.spec_from_file_location("convnet_setup", os.path.join(ROOT, "setup.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_cache(build, **entries):
    os.makedirs(os.path.join(build, "CMakeFiles"), exist_ok=True)
    with open(os.path.join(build, "CMakeCache.txt"), "w") as f:
        f.write("# This is the CMakeCache file.\n// a comment\n")
        for k, v in entries.items():
            f.write(f"{k}:INTERNAL={v}\n")


def test_stale_cmake_cache_is_detected_and_dropped(tmp_path):
    s = load_setup()
    tools = tmp_path / "tools"
    tools.mkdir()
    ninja, cmake = tools / "ninja", tools / "cmake"
    ninja.write_text("")
    cmake.write_text("")
    good = dict(CMAKE_GENERATOR="Ninja", CMAKE_HOME_DIRECTORY=s.SRC, CMAKE_MAKE_PROGRAM=str(ninja),
                CMAKE_COMMAND=str(cmake))
    build = str(tmp_path / "build")
    assert s.read_cache(build) == {}
    assert s.stale_cache_reason({}, str(ninja)) is None
    write_cache(build, **good)
    assert s.read_cache(build) == good
    assert s.stale_cache_reason(s.read_cache(build), str(ninja)) is None
    # pip's deleted build environment: the cached ninja and cmake are gone.
    gone = dict(good, CMAKE_MAKE_PROGRAM="/tmp/pip-build-env-x/bin/ninja")
    assert "names the ninja /tmp/pip-build-env-x/bin/ninja" in s.stale_cache_reason(gone, str(ninja))
    gone = dict(good, CMAKE_COMMAND="/tmp/pip-build-env-x/cmake")
    assert "which is gone" in s.stale_cache_reason(gone, str(ninja))
    other = dict(good, CMAKE_GENERATOR="Unix Makefiles")
    assert "'Unix Makefiles' generator" in s.stale_cache_reason(other, str(ninja))
    moved = dict(good, CMAKE_HOME_DIRECTORY=str(tmp_path))
    assert "belongs to the source tree" in s.stale_cache_reason(moved, str(ninja))
    # Dropping the configuration keeps the compiled objects (the rebuild stays incremental).
    obj = os.path.join(build, "CMakeFiles", "_cpu.dir")
    os.makedirs(obj)
    keep = os.path.join(build, "emu", "x.o")
    os.makedirs(os.path.dirname(keep))
    open(keep, "w").close()
    s.drop_cache(build)
    assert not os.path.exists(os.path.join(build, "CMakeCache.txt"))
    assert not os.path.exists(os.path.join(build, "CMakeFiles")) and os.path.exists(keep)


def test_shipped_configs_are_the_layers_folder():
    from convnet.shipped import shipped_configs
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "layers", "*.cfg")))
    assert sorted(shipped_configs()) == names


def make_venv(path):
    venv.create(path, with_pip=True)
    return os.path.join(path, "bin", "python")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def check_installed(py, where):
    """The installed package, used from a directory that is not the source tree."""
    out = run([py, "-c", "import convnet, convnet.shipped as s; print(convnet.__file__); "
                         "print(sorted(s.shipped_configs())); print(convnet.backends())"],
              cwd=where).stdout.splitlines()
    assert "site-packages" in out[0], out
    assert out[1] == "['alexnet', 'cifar18', 'tiny', 'tiny-towers']" and "'cpu'" in out[2], out
    bindir = os.path.dirname(py)
    r = run([os.path.join(bindir, "convnet-train"), "--version"], cwd=where)
    assert r.stdout.startswith("convnet ")
    r = run([os.path.join(bindir, "convnet-train"), "tiny", "--data",
             "synthetic:size=12,train=64,test=32", "--batch-size", "32", "--epochs", "1",
             "--save-dir", os.path.join(where, "run")], cwd=where)
    assert "top-1 error" in r.stdout
    r = subprocess.run([os.path.join(bindir, "convnet-make-data"), "nope", "out"], cwd=where,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("convnet-make-data: error:")


@pytest.mark.slow
def test_pip_install_twice_then_use_elsewhere(tmp_path):
    """Two regular installs in this checkout (the second reuses build/cmake, whose cache names
    the first build environment's deleted cmake and ninja). About 2 x 3 min on 2 cores."""
    py = make_venv(str(tmp_path / "venv"))
    env = dict(os.environ, CONVNET_CUDA="OFF")
    for _ in range(2):
        run([py, "-m", "pip", "install", "-q", ROOT], env=env)
    check_installed(py, str(tmp_path))


@pytest.mark.slow
def test_sdist_builds_and_installs(tmp_path):
    """The sdist holds everything a build needs; installed into a fresh venv it works from
    another directory. About 4 min on 2 cores."""
    pytest.importorskip("build")
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), ROOT])
    sdist, = glob.glob(str(tmp_path / "dist" / "convnet-*.tar.gz"))
    listing = run(["tar", "tzf", sdist]).stdout.split()
    for f in ("CMakeLists.txt", "LICENSE", "setup.py", "layers/alexnet.cfg", "tools/nvcc_log.py",
              "csrc/cpu/isa.cpp", "tests/fixtures/cc2-layers-223-1gpu.cfg", "convnet/train.py"):
        assert any(p.endswith("/" + f) for p in listing), f
    assert not any(p.endswith(".so") or "/build/" in p for p in listing)
    py = make_venv(str(tmp_path / "venv"))
    run([py, "-m", "pip", "install", "-q", sdist], env=dict(os.environ, CONVNET_CUDA="OFF"))
    check_installed(py, str(tmp_path))
