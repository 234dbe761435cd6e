#!/usr/bin/env bash
# Builds an instrumented copy of proxy/_fastpath/http1 for the fuzzer: clang, AddressSanitizer,
# libFuzzer edge coverage (-fsanitize=fuzzer-no-link), and a few UndefinedBehaviorSanitizer checks
# compiled as traps (no extra runtime: a violation is a SIGILL, which libFuzzer reports as a crash).
#
# Output: fuzz/build/proxy/_fastpath/http1<EXT_SUFFIX> (+ empty package __init__.py files), so
# that fuzz/fuzz_http1.py can import it with fuzz/build first on sys.path. The C file is generated
# into fuzz/build/ as well: the normal in-place build (proxy/_fastpath/*.c, *.so) is not touched.
# The .so needs the ASan runtime preloaded; fuzz_http1.py re-executes itself with LD_PRELOAD set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FUZZ_PYTHON:-.venv/bin/python}
CC=${FUZZ_CC:-clang}
OUT=fuzz/build
SRC_DIR=${FUZZ_SRC_DIR:-proxy/_fastpath}   # another dir: fuzz a modified copy (bisecting, mutants)
PKG=$OUT/proxy/_fastpath

mkdir -p "$PKG"
: > "$OUT/proxy/__init__.py"
: > "$PKG/__init__.py"
# the .pxd must sit next to the .pyx it declares; copy both so that Cython sees the package layout
# proxy/_fastpath/ (module name proxy._fastpath.http1, as in the real build)
cp "$SRC_DIR/http1.pyx" "$SRC_DIR/http1.pxd" "$PKG/"

# same compiler directives as setup.py
"$PY" -m cython -3 -X boundscheck=False -X wraparound=False -X cdivision=True \
    -o "$PKG/http1.c" "$PKG/http1.pyx"

INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
EXT=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
UBSAN_CHECKS=signed-integer-overflow,shift,integer-divide-by-zero,bounds,null,bool,enum,return,unreachable,vla-bound
"$CC" -shared -fPIC -g -O1 -fno-omit-frame-pointer \
    -fsanitize=address,fuzzer-no-link,$UBSAN_CHECKS -fsanitize-trap=$UBSAN_CHECKS \
    -I"$INC" -o "$PKG/http1$EXT.tmp" "$PKG/http1.c"
mv "$PKG/http1$EXT.tmp" "$PKG/http1$EXT"

echo "fuzz/build.sh: built $PKG/http1$EXT"
