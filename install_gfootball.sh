#!/usr/bin/env bash
# Installs Google Research Football (gfootball 2.10.2, headless) into an existing venv made by ./install.sh.
# Usage: ./install_gfootball.sh [VENV]   (or VENV=/path/to/venv ./install_gfootball.sh; default .venv)
# Needs root for apt-get (Debian 12). Safe to run again: installed parts are skipped, and pip reuses the
# wheel it built the first time from its cache (the engine compile takes ~4.5-7 min on 2 cores; a cached
# wheel installs in seconds).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${1:-${VENV:-.venv}}
if [ ! -x "$VENV/bin/python" ]; then
    echo "No venv at $VENV: run ./install.sh first (or pass the venv path)." >&2
    exit 1
fi
start=$(date +%s)

# Build-time only: compiler, cmake, and the -dev packages the engine's CMakeLists.txt looks for
# (OpenGL, EGL, SDL2 + image/ttf/gfx, Boost thread/system/filesystem/python, Python headers).
# The -dev packages pull in the runtime libraries the compiled engine links against. Rendering, X and
# VNC packages from gfootball's README (xvfb, x11vnc, mesa-utils, directfb, libst) are not needed headless.
APT_PACKAGES=(cmake build-essential libgl1-mesa-dev libegl-dev
    libsdl2-dev libsdl2-image-dev libsdl2-ttf-dev libsdl2-gfx-dev
    libboost-thread-dev libboost-system-dev libboost-filesystem-dev libboost-python-dev python3-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "apt-get installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "system packages ready after $(( $(date +%s) - start )) s"

# The engine build script calls `python3 -c 'import psutil'`, so the venv's python must come first on PATH.
export PATH="$(cd "$VENV" && pwd)/bin:$PATH"
PIP=(python -m pip install --quiet --disable-pip-version-check)
# Build deps go into the venv because the build runs without isolation (an isolated build env lacks psutil).
"${PIP[@]}" "psutil==7.2.2" wheel "setuptools<81"
# Runtime imports of gfootball: cv2 (wrappers.py, headless build suffices), gym's old 4-tuple API
# (gym 0.26 breaks reset), absl, six. scipy is listed by gfootball but never imported.
"${PIP[@]}" "opencv-python-headless==5.0.0.93" "absl-py==2.5.1" "six==1.17.0" "gym==0.25.2"
# The engine's CMakeLists.txt hard-codes -g; compiler wrappers appending -g0 drop the debug info: ~30 % less
# compile time and a 10 MB instead of a 31 MB wheel, with the same machine code (identical trajectories).
wrappers=$(mktemp -d)
trap 'rm -rf "$wrappers"' EXIT
printf '#!/bin/sh\nexec %s "$@" -g0\n' "$(command -v g++)" > "$wrappers/gxx-g0"
printf '#!/bin/sh\nexec %s "$@" -g0\n' "$(command -v gcc)" > "$wrappers/gcc-g0"
chmod +x "$wrappers"/*
# --no-deps: gfootball's `pygame` requirement would overwrite pygame-ce (used by PettingZoo).
CXX="$wrappers/gxx-g0" CC="$wrappers/gcc-g0" "${PIP[@]}" --no-build-isolation --no-deps "gfootball==2.10.2"
echo "gfootball installed after $(( $(date +%s) - start )) s"

python - <<'EOF'
import importlib.metadata

try:  # the `pygame` distribution would overwrite pygame-ce's files
    raise SystemExit(f"pygame {importlib.metadata.version('pygame')} got installed next to pygame-ce: "
                     "pip uninstall -y pygame pygame-ce && pip install pygame-ce==2.5.8")
except importlib.metadata.PackageNotFoundError:
    pass
import warnings

from gfootball.env import create_environment

warnings.simplefilter("ignore", DeprecationWarning)  # after gym's import, which resets the filter
env = create_environment(env_name="academy_3_vs_1_with_keeper", representation="simple115v2",
                         number_of_left_players_agent_controls=3)
obs = env.reset()
env.step([0, 0, 0])
env.close()
print("gfootball OK, observation", obs.shape)
EOF
