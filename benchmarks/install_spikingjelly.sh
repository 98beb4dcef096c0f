#!/usr/bin/env bash
# SpikingJelly for the benchmarks only (`make bench` runs this), never a spikeport dependency.
# spikingjelly 2.0.0 declares torchvision and torchaudio, which would pull a CUDA torch of
# several GB: install it with --no-deps into benchmarks/work/sjlib (not into .venv), beside
# the small packages its ann2snn imports. benchmarks/peer_sj.py puts that folder on sys.path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=benchmarks/work/sjlib
VERSION=2.0.0
if [ -f "$DEST/.installed-$VERSION" ]; then
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip install -q --disable-pip-version-check --target "$DEST" requests "loguru>=0.7,<1"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$DEST" "spikingjelly==$VERSION"
touch "$DEST/.installed-$VERSION"
echo "spikingjelly $VERSION installed in $DEST (benchmarks only)"
