#!/usr/bin/env bash
# StarCraft II (Linux 4.10), the SMAC maps and the smac/smacv2 packages, as pymarl sets them up:
#   - StarCraft II and the maps into 3rdparty/StarCraftII (SMAC's maps, plus SMACv2's 32x32_flat for 10gen_*),
#   - smac and smacv2 from git into .venv (neither is on PyPI; PyPI's "smac" is SMAC3, an unrelated optimiser).
# Needs internet access to blzdistsc2-a.akamaihd.net and github.com; not run by CI (no StarCraft II there).
# Usage: ./install_sc2.sh            (VENV=path/to/venv ./install_sc2.sh to install the packages elsewhere)
# Afterwards: export SC2PATH="$(pwd)/3rdparty/StarCraftII", then --env-config=sc2 or --env-config=sc2v2.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
mkdir -p 3rdparty && cd 3rdparty
export SC2PATH="$(pwd)/StarCraftII"
if [ ! -d "$SC2PATH" ]; then
    echo "Downloading StarCraft II 4.10 into $SC2PATH"
    wget -q --show-progress http://blzdistsc2-a.akamaihd.net/Linux/SC2.4.10.zip
    # the archive password is the EULA acceptance phrase Blizzard publishes with the archive
    unzip -q -P iagreetotheeula SC2.4.10.zip
    rm -f SC2.4.10.zip
else
    echo "StarCraft II already in $SC2PATH"
fi
MAP_DIR="$SC2PATH/Maps"
mkdir -p "$MAP_DIR/SMAC_Maps"
wget -q --show-progress https://github.com/oxwhirl/smac/releases/download/v0.1-beta1/SMAC_Maps.zip
unzip -q -o SMAC_Maps.zip -d "$MAP_DIR"
rm -f SMAC_Maps.zip

# smacv2's maps (32x32_flat for the 10gen_* tasks) ship in its repository, loose or zipped, not in its
# pip package: copy them from a shallow clone
rm -rf smacv2 smacv2_maps && git clone -q --depth 1 https://github.com/oxwhirl/smacv2.git smacv2
find smacv2 -name 'SMAC_Maps.zip' -exec unzip -q -o {} -d smacv2_maps \;
find smacv2 smacv2_maps -name '*.SC2Map' -exec cp {} "$MAP_DIR/SMAC_Maps/" \; 2>/dev/null || true

cd ..
if [ -x "$VENV/bin/pip" ]; then
    "$VENV/bin/pip" install --quiet "git+https://github.com/oxwhirl/smac.git" ./3rdparty/smacv2
    # pysc2 (their dependency) requires "pygame", whose files overwrite pygame-ce's (the same module,
    # used by pettingzoo/mpe2): take pygame out again and restore pygame-ce
    if "$VENV/bin/pip" show pygame-ce >/dev/null 2>&1; then
        "$VENV/bin/pip" uninstall --quiet -y pygame
        "$VENV/bin/pip" install --quiet --force-reinstall --no-deps "pygame-ce==2.5.8"
    fi
    "$VENV/bin/python" -c "import smac.env, smacv2.env, pygame; print('smac and smacv2 import')"
else
    echo "No virtualenv at $VENV (run ./install.sh first, or set VENV); skipped the smac/smacv2 packages." >&2
fi
echo "StarCraft II, the SMAC/SMACv2 maps and the packages are installed. export SC2PATH=$SC2PATH"
