#!/usr/bin/env bash
# Set up dmask-live on a fresh Debian/Ubuntu machine (or any machine with the libraries present).
#   ./setup.sh         runtime: system libraries, .venv, the package, the ONNX models
#   ./setup.sh --dev   also what the tests and benchmarks need (chromium, test tools)
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"

dev=false
[ "${1:-}" = "--dev" ] && dev=true

# Mesa's EGL for offscreen rendering on machines without a GPU.
apt_packages=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libgbm1)
$dev && apt_packages+=(chromium fonts-dejavu-core xvfb)  # xvfb: the vcam preview window test

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: please install the system packages for: ${missing[*]} (EGL/GL libraries${dev:+, chromium})" >&2
  fi
fi

python_bin="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if $dev; then
  .venv/bin/python -m pip install -q -e ".[dev]"
else
  .venv/bin/python -m pip install -q -e .
fi

# Convert MediaPipe's TFLite networks to ONNX once (verified against the manifest after).
.venv/bin/dmask-live models
echo "setup: done ($($dev && echo dev || echo runtime))"
