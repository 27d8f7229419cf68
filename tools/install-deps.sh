#!/usr/bin/env bash
# Installs the Debian packages HistoDiff builds against, if any is missing. Idempotent: does nothing when all are present.
set -euo pipefail
packages=(ocl-icd-opencl-dev opencl-headers libclblast-dev libpng-dev pocl-opencl-icd libopenblas-dev libopenmpi-dev
          openmpi-bin)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
