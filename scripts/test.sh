#!/usr/bin/env bash
# Installs what the tests need and runs every test: the C++ suite (GoogleTest, via ctest)
# and the Python suite (pytest, against corral installed with `pip install .`).
#
# Usage: scripts/test.sh            (from the repository root, or anywhere)
# Needs: Python >= 3.10 with venv, a C/C++ compiler, cmake; GoogleTest comes from apt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python3}
venv=${CORRAL_VENV:-$root/.venv}

step() { printf '\n==> %s\n' "$*"; }

# Test-only tools from Debian's packages, each installed only when missing: GoogleTest,
# promtool (in the `prometheus` package) to check the metrics exposition, and Chromium
# for the dashboard's browser tests.
packages=()
if [ ! -f /usr/include/gtest/gtest.h ] && ! pkg-config --exists gtest 2>/dev/null; then
  packages+=(libgtest-dev)
fi
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
[ -x /usr/bin/chromium ] || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  step "installing ${packages[*]} (apt)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # RUNLEVEL=1: a package that ships a daemon (prometheus) does not start it here.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo_cmd apt-get install -y -qq \
    "${packages[@]}" >/dev/null
fi

step "virtual environment $venv"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
vpy="$venv/bin/python"
"$vpy" -m pip install -q --upgrade pip

step "pip install .[test]  (builds the native engine)"
"$vpy" -m pip install -q ".[test]"

step "C++ build (libcorral, GoogleTest suite, test helper)"
# The same PyPI packages that `pip install .` builds with provide Boost and fmt here.
"$vpy" -m pip install -q cmeel-boost cmeel-fmt pybind11 ninja cmake
export PATH="$venv/bin:$PATH"
cmake -S . -B build/tests -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCORRAL_BUILD_TESTS=ON -DPython_EXECUTABLE="$vpy" >/dev/null
cmake --build build/tests

step "C++ tests (ctest)"
(cd build/tests && ctest --output-on-failure -j2)

step "C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (the asan preset)"
cmake --preset asan -DPython_EXECUTABLE="$vpy" >/dev/null
cmake --build build/asan
(cd build/asan && ctest --output-on-failure -j2)

step "lint: ruff and mypy (strict) on the Python package"
"$venv/bin/ruff" check src/python tests/python examples
MYPYPATH=src/python "$venv/bin/mypy" src/python/corral

step "Python tests (pytest)"
export CORRAL_HELPER="$root/build/tests/tests/helper/corral_helper"
# Run from a directory without the source tree on sys.path: the installed package is tested.
"$vpy" -m pytest -p no:cacheprovider "$root/tests/python" "$@"
