"""Builds the extension modules by running CMake (CMakeLists.txt is the one build description).

Environment knobs: CONVNET_CUDA=AUTO|ON|OFF (default AUTO: build convnet._cuda when nvcc is found),
CONVNET_CUDA_ARCHS (SASS archs of convnet._cuda, e.g. "90" or "80;90"; default every supported one),
CONVNET_EMU=ON|OFF (default ON: build convnet._emu), CMAKE_BUILD_PARALLEL_LEVEL (jobs),
CONVNET_BUILD_DIR (reuse a build tree between installs).

The build tree (build/cmake by default) outlives pip's temporary build environments: every build
configures it again with the current cmake and ninja (its cache may name deleted ones), pybind11 is
copied into it (so compile commands do not change between environments and rebuilds stay
incremental), and a tree made by another generator or for another source tree is started afresh.
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
    """Linux on x86-64 only: the CPU backend's ISA files are compiled with x86 flags (-mavx2,
    -mavx512f) and chosen by cpuid, the emulated module uses x86's TLS dialect (gnu2), and the
    SIMT emulation finds its shared-memory section through ELF linker symbols."""
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "amd64"):
        sys.exit(f"convnet builds on Linux x86-64 only (this is {sys.platform} {machine}); "
                 "see README, 'Set-up'")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def emu_wanted():
    return os.environ.get("CONVNET_EMU", "ON").upper() != "OFF"


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


def cache_mismatch(cache):
    """Why an existing build tree must be configured afresh (None: it is reused)."""
    if not cache:
        return None
    if cache.get("CMAKE_GENERATOR") != GENERATOR:
        return f"it was made by the {cache.get('CMAKE_GENERATOR')!r} generator"
    home = cache.get("CMAKE_HOME_DIRECTORY")
    if not home or os.path.realpath(home) != os.path.realpath(SRC):
        return f"it belongs to the source tree {home}"
    return None


def drop_cache(build):
    """Forget the configuration and the objects (CMake keeps them under CMakeFiles/)."""
    for name in ("CMakeCache.txt", "build.ninja", "cmake_install.cmake", ".ninja_log",
                 ".ninja_deps"):
        path = os.path.join(build, name)
        if os.path.exists(path):
            os.remove(path)
    shutil.rmtree(os.path.join(build, "CMakeFiles"), ignore_errors=True)


def stable_pybind11(build):
    """pybind11's headers and CMake files copied into the build tree, one copy per version: the
    compile commands then name the same include directory in every build environment, so ninja
    rebuilds only what changed."""
    import pybind11

    dst = os.path.join(build, f"pybind11-{pybind11.__version__}")
    if not os.path.isdir(dst):
        src = os.path.dirname(os.path.dirname(os.path.dirname(pybind11.get_cmake_dir())))
        tmp = dst + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(os.path.join(src, "include"), os.path.join(tmp, "include"))
        shutil.copytree(os.path.join(src, "share"), os.path.join(tmp, "share"))
        os.replace(tmp, dst)
    return os.path.join(dst, "share", "cmake", "pybind11")


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
        check_platform()
        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True

        outdir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        build = os.environ.get("CONVNET_BUILD_DIR") or os.path.join(SRC, "build", "cmake")
        os.makedirs(build, exist_ok=True)
        cmake, ninja = build_tools()
        reason = cache_mismatch(read_cache(build))
        if reason:
            print(f"convnet: starting {build} afresh: {reason}")
            drop_cache(build)
        # The cache may name the ninja and cmake of an earlier, deleted build environment: the
        # ninja is passed again, and configuring records the current cmake.
        cfg = [
            f"-DCONVNET_OUT={outdir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={stable_pybind11(build)}",
            f"-DCONVNET_CUDA={os.environ.get('CONVNET_CUDA', 'AUTO')}",
            f"-DCMAKE_MAKE_PROGRAM={ninja}",
            f"-DCONVNET_EMU={'ON' if emu_wanted() else 'OFF'}",
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
    modules = (["convnet._cpu"] + (["convnet._emu"] if emu_wanted() else [])
               + (["convnet._cuda"] if cuda_wanted() else []))
    setup(ext_modules=[CMakeExtension(m) for m in modules],
          cmdclass={"build_ext": CMakeBuild, "build_py": BuildPy})
