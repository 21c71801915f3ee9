#!/usr/bin/env bash
# Downloads StarCraft II (Linux, 4.10) and the SMAC maps into 3rdparty/StarCraftII, as pymarl does.
# Needs internet access to blzdistsc2-a.akamaihd.net and github.com; not run by CI (no StarCraft II there).
# Afterwards: export SC2PATH="$(pwd)/3rdparty/StarCraftII"
set -euo pipefail
cd "$(dirname "$0")"
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
mkdir -p "$MAP_DIR"
wget -q --show-progress https://github.com/oxwhirl/smac/releases/download/v0.1-beta1/SMAC_Maps.zip
unzip -q -o SMAC_Maps.zip -d "$MAP_DIR"
rm -f SMAC_Maps.zip
echo "StarCraft II and SMAC maps installed. export SC2PATH=$SC2PATH"
