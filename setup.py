"""Builds the extension modules by running CMake (CMakeLists.txt is the one build description).

Environment knobs: CONVNET_CUDA=AUTO|ON|OFF (default AUTO: build convnet._cuda when nvcc is found),
CONVNET_CUDA_ARCHS (SASS archs of convnet._cuda, e.g. "90" or "80;90"; default every supported one),
CONVNET_EMU=ON|OFF (default ON: build convnet._emu), CMAKE_BUILD_PARALLEL_LEVEL (jobs),
CONVNET_BUILD_DIR (reuse a build tree between installs).
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def emu_wanted():
    return os.environ.get("CONVNET_EMU", "ON").upper() != "OFF"


def cuda_wanted():
    mode = os.environ.get("CONVNET_CUDA", "AUTO").upper()
    return mode == "ON" or (mode == "AUTO" and shutil.which("nvcc") is not None)


class CMakeBuild(build_ext):
    """One CMake build makes every module; the first extension runs it, the rest are its outputs."""

    def build_extension(self, ext):
        import pybind11

        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True

        outdir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        src = os.path.dirname(os.path.abspath(__file__))
        build = os.environ.get("CONVNET_BUILD_DIR") or os.path.join(src, "build", "cmake")
        os.makedirs(build, exist_ok=True)
        cfg = [
            f"-DCONVNET_OUT={outdir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCONVNET_CUDA={os.environ.get('CONVNET_CUDA', 'AUTO')}",
            f"-DCONVNET_EMU={'ON' if emu_wanted() else 'OFF'}",
            "-DCMAKE_BUILD_TYPE=Release",
            "-G", "Ninja",
        ]
        subprocess.run(["cmake", "-S", src, "-B", build] + cfg, check=True)
        subprocess.run(["cmake", "--build", build], check=True)


modules = (["convnet._cpu"] + (["convnet._emu"] if emu_wanted() else [])
           + (["convnet._cuda"] if cuda_wanted() else []))
setup(ext_modules=[CMakeExtension(m) for m in modules], cmdclass={"build_ext": CMakeBuild})
