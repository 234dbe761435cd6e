#!/usr/bin/env bash
# Installs what `make fuzz` needs when missing: clang with its sanitizer runtimes (Debian:
# clang + libclang-rt-14-dev, installed when running as root) and atheris (pip, into the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FUZZ_PYTHON:-.venv/bin/python}
CC=${FUZZ_CC:-clang}

have_clang() {
  # -fsanitize=address needs clang's resource files (asan_ignorelist.txt, from libclang-rt-*-dev)
  command -v "$CC" >/dev/null 2>&1 && [ -e "$("$CC" -print-resource-dir)/share/asan_ignorelist.txt" ]
}

if ! have_clang; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fuzz/deps.sh: installing clang and libclang-rt-14-dev"
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    # libclang-rt-14-dev is Debian 12's name; libclang-rt-dev follows the default clang elsewhere
    apt-get install -y -qq clang libclang-rt-14-dev >/dev/null \
      || apt-get install -y -qq clang libclang-rt-dev >/dev/null
  fi
  if ! have_clang; then
    echo "fuzz/deps.sh: clang with AddressSanitizer support is required" \
         "(Debian/Ubuntu: sudo apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
  fi
fi

if ! "$PY" -c 'import atheris' >/dev/null 2>&1; then
  echo "fuzz/deps.sh: installing atheris"
  "$PY" -m pip install -q atheris
fi
"$PY" -c 'import httptools' >/dev/null 2>&1 || "$PY" -m pip install -q httptools
