"""Builds the Cython extensions in proxy/_fastpath/ (metadata lives in pyproject.toml)."""
import glob
import os
import shutil
import sys
import sysconfig

from setuptools import Extension, setup


def _check_toolchain():
    # A missing compiler or missing Python headers otherwise surface as pages of distutils noise.
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        sys.exit(f"cyvoy: cannot build proxy/_fastpath: C compiler '{cc}' not found "
                 "(Debian/Ubuntu: apt-get install build-essential)")
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(header):
        sys.exit(f"cyvoy: cannot build proxy/_fastpath: Python headers not found ({header}); "
                 "Debian/Ubuntu: apt-get install python3-dev")


def _extensions():
    from Cython.Build import cythonize

    exts = [
        Extension(
            "proxy._fastpath." + os.path.splitext(os.path.basename(p))[0],
            [p],
            extra_compile_args=["-O2"],
        )
        for p in sorted(glob.glob("proxy/_fastpath/*.pyx"))
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )


if __name__ == "__main__":
    if any(a in sys.argv for a in ("build_ext", "bdist_wheel", "develop", "install", "editable_wheel", "build")):
        _check_toolchain()
    setup(ext_modules=_extensions())
