#!/usr/bin/env bash
# Installs the Debian packages tide needs, if any is missing. Idempotent.
# TIDE_WITH_TORCH=1 adds PyTorch and scikit-learn (fixtures and benchmarks only).
set -euo pipefail
pkgs=(build-essential cmake pkg-config luajit libluajit-5.1-dev lua-busted
      libopenblas-openmp-dev libpng-dev zlib1g-dev dataset-fashion-mnist gnuplot-nox)
command -v npm >/dev/null || pkgs+=(npm)
[ "${TIDE_WITH_TORCH:-0}" = 1 ] && pkgs+=(python3-torch python3-sklearn)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
echo "tide: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
