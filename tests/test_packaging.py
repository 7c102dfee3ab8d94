"""Packaging: the build tree survives pip's temporary build environments (reconfigured with the
current tools, pybind11 copied in so rebuilds stay incremental), and the shipped configs are the
source tree's layers/*.cfg. The
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


def test_build_tree_reuse_rules(tmp_path):
    s = load_setup()
    build = str(tmp_path / "build")
    assert s.read_cache(build) == {} and s.cache_mismatch({}) is None
    # The cache of pip's earlier, deleted build environment: its ninja and cmake are gone, which
    # the next configure overrides (the tree is reused).
    cache = dict(CMAKE_GENERATOR="Ninja", CMAKE_HOME_DIRECTORY=s.SRC,
                 CMAKE_MAKE_PROGRAM="/tmp/pip-build-env-x/overlay/bin/ninja",
                 CMAKE_COMMAND="/tmp/pip-build-env-x/overlay/cmake/bin/cmake")
    write_cache(build, **cache)
    assert s.read_cache(build) == cache
    assert s.cache_mismatch(s.read_cache(build)) is None
    # Another generator or another source tree: started afresh.
    other = dict(cache, CMAKE_GENERATOR="Unix Makefiles")
    assert "'Unix Makefiles' generator" in s.cache_mismatch(other)
    moved = dict(cache, CMAKE_HOME_DIRECTORY=str(tmp_path))
    assert f"belongs to the source tree {tmp_path}" in s.cache_mismatch(moved)
    os.makedirs(os.path.join(build, "CMakeFiles", "_cpu.dir"))
    s.drop_cache(build)
    assert os.listdir(build) == []


def test_pybind11_is_copied_once_per_version(tmp_path):
    pybind11 = pytest.importorskip("pybind11")
    s = load_setup()
    d = s.stable_pybind11(str(tmp_path))
    assert d == str(tmp_path / f"pybind11-{pybind11.__version__}" / "share" / "cmake" / "pybind11")
    assert os.path.isfile(os.path.join(d, "pybind11Config.cmake"))
    assert os.path.isfile(str(tmp_path / f"pybind11-{pybind11.__version__}" / "include" /
                              "pybind11" / "pybind11.h"))
    assert s.stable_pybind11(str(tmp_path)) == d


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
    layers = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "layers",
                                                                             "*.cfg")))
    assert out[1] == str(layers) and "'cpu'" in out[2], out
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
              "csrc/cpu/isa.cpp", "tests/fixtures/imagenet-1gpu.cfg", "convnet/train.py"):
        assert any(p.endswith("/" + f) for p in listing), f
    assert not any(p.endswith(".so") or "/build/" in p for p in listing)
    py = make_venv(str(tmp_path / "venv"))
    run([py, "-m", "pip", "install", "-q", sdist], env=dict(os.environ, CONVNET_CUDA="OFF"))
    check_installed(py, str(tmp_path))
