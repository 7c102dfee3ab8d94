"""Builds the extension modules by running CMake (CMakeLists.txt is the one build description).

Environment knobs: CONVNET_CUDA=AUTO|ON|OFF (default AUTO: build convnet._cuda when nvcc is found),
CMAKE_BUILD_PARALLEL_LEVEL (jobs), CONVNET_BUILD_DIR (reuse a build tree between installs).

The build tree (build/cmake by default) outlives pip's temporary build environments, whose cmake
and ninja its CMake cache would name: a cache whose generator, ninja or source directory is not
the current one, or whose cmake is gone, is dropped before configuring (object files are kept, so the
rebuild stays incremental).
"""
import glob
import os
import platform
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

SRC = os.path.dirname(os.path.abspath(__file__))
GENERATOR = "Ninja"


def check_platform():
    """The kernels are x86-64 (cpuid dispatch, SIMD intrinsics) and the SIMT emulation switches
    contexts in x86-64 assembly with the System V ABI: Linux on x86-64 only."""
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "amd64"):
        sys.exit(f"convnet builds on Linux x86-64 only (this is {sys.platform} {machine}); "
                 "see README, 'Set-up'")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def cuda_wanted():
    mode = os.environ.get("CONVNET_CUDA", "AUTO").upper()
    if mode not in ("AUTO", "ON", "OFF"):
        sys.exit(f"CONVNET_CUDA={os.environ['CONVNET_CUDA']}: expected AUTO, ON or OFF")
    return mode == "ON" or (mode == "AUTO" and shutil.which("nvcc") is not None)


def read_cache(build):
    """{name: value} of build/CMakeCache.txt, or {} when there is none."""
    entries = {}
    try:
        with open(os.path.join(build, "CMakeCache.txt"), encoding="utf-8") as f:
            for line in f:
                name, sep, value = line.rstrip("\n").partition("=")
                if sep and not line.startswith(("#", "//")):
                    entries[name.split(":", 1)[0]] = value
    except FileNotFoundError:
        pass
    return entries


def stale_cache_reason(cache, ninja):
    """Why an existing CMake cache cannot be reused with this cmake and ninja (None: it can)."""
    if not cache:
        return None
    same = lambda a, b: bool(a) and os.path.realpath(a) == os.path.realpath(b)  # noqa: E731
    if cache.get("CMAKE_GENERATOR") != GENERATOR:
        return f"it was made by the {cache.get('CMAKE_GENERATOR')!r} generator"
    if not same(cache.get("CMAKE_HOME_DIRECTORY"), SRC):
        return f"it belongs to the source tree {cache.get('CMAKE_HOME_DIRECTORY')}"
    if not same(cache.get("CMAKE_MAKE_PROGRAM"), ninja):
        return f"it names the ninja {cache.get('CMAKE_MAKE_PROGRAM')}, not {ninja}"
    # pip's cmake is a wrapper around its own binary, which the cache names: compare existence.
    if not os.path.exists(cache.get("CMAKE_COMMAND", "")):
        return f"it names the cmake {cache.get('CMAKE_COMMAND')}, which is gone"
    return None


def drop_cache(build):
    """Forget the configuration (cache and CMakeFiles/); keep object files for ninja."""
    for name in ("CMakeCache.txt", "build.ninja", "cmake_install.cmake"):
        path = os.path.join(build, name)
        if os.path.exists(path):
            os.remove(path)
    shutil.rmtree(os.path.join(build, "CMakeFiles"), ignore_errors=True)


def build_tools():
    """The cmake and ninja of this build: those on PATH (pip's build environment puts the ones
    it installed from pyproject.toml's build requirements first)."""
    cmake, ninja = shutil.which("cmake"), shutil.which("ninja")
    missing = [n for n, p in (("cmake", cmake), ("ninja", ninja)) if p is None]
    if missing:
        sys.exit(f"convnet's build needs {' and '.join(missing)} on PATH "
                 "(pip install cmake ninja, or let pip's build isolation install them)")
    return cmake, ninja


class CMakeBuild(build_ext):
    """One CMake build makes every module; the first extension runs it, the rest are its outputs."""

    def build_extension(self, ext):
        import pybind11

        check_platform()
        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True

        outdir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        build = os.environ.get("CONVNET_BUILD_DIR") or os.path.join(SRC, "build", "cmake")
        os.makedirs(build, exist_ok=True)
        cmake, ninja = build_tools()
        reason = stale_cache_reason(read_cache(build), ninja)
        if reason:
            print(f"convnet: reconfiguring {build}: its CMake cache is stale ({reason})")
            drop_cache(build)
        cfg = [
            f"-DCONVNET_OUT={outdir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCONVNET_CUDA={os.environ.get('CONVNET_CUDA', 'AUTO')}",
            f"-DCMAKE_MAKE_PROGRAM={ninja}",
            "-DCMAKE_BUILD_TYPE=Release",
            "-G", GENERATOR,
        ]
        subprocess.run([cmake, "-S", SRC, "-B", build] + cfg, check=True)
        subprocess.run([cmake, "--build", build], check=True)


class BuildPy(build_py):
    """Also ships the layer configs of layers/ as convnet/configs/ (found by name at run time, see
    convnet/shipped.py). An editable install reads them from layers/ in place."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        dst = os.path.join(self.build_lib, "convnet", "configs")
        os.makedirs(dst, exist_ok=True)
        for cfg in sorted(glob.glob(os.path.join(SRC, "layers", "*.cfg"))):
            self.copy_file(cfg, os.path.join(dst, os.path.basename(cfg)))


if __name__ == "__main__":  # as pip's build backend runs it; tests import the helpers above
    modules = ["convnet._cpu", "convnet._emu"] + (["convnet._cuda"] if cuda_wanted() else [])
    setup(ext_modules=[CMakeExtension(m) for m in modules],
          cmdclass={"build_ext": CMakeBuild, "build_py": BuildPy})
