#!/usr/bin/env bash
# Prepare, on a machine with PyPI access, what benchmarks/gpu_check.sh needs on a bare GPU machine
# that cannot reach the network (the `device` machines: Python 3.12 with torch 2.11 + CUDA, numpy 2,
# no PyTorch3D, MediaPipe or open_clip). Each call there may carry at most 64 MiB, so the payload is
# split into folders of at most ~55 MiB, carried one per call:
#   .whl/a  PyTorch3D (the package with its 200 MB CUDA library xz-compressed), open_clip, small deps
#   .whl/b  MediaPipe (its wheel), protobuf 4, and the parsed ICT-FaceKit model (xz)
#   .whl/c  numpy<2, only if MediaPipe fails to import beside the machine's numpy 2
# Usage: bash benchmarks/gpu_bundle.sh   (needs the ICT-FaceKit zip: ../shared or LIKENESS_ICT_FACEKIT)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/env.sh"
OUT="$ROOT/.whl"   # git-ignored
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
rm -rf "$OUT"; mkdir -p "$OUT/a" "$OUT/b" "$OUT/c"

download() {  # download DEST SPEC... : cp312 manylinux x86_64 wheels, no dependencies
  local dest="$1"; shift
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "$@"
}
pin() { grep -E "^$1==" "$ROOT/requirements.txt" | head -1; }

# a: PyTorch3D, repacked so that it fits (the wheel is 70 MB; its library xz-compresses to ~36 MB).
download "$TMP" "$(pin easypytorch3d)"
mkdir -p "$TMP/p3d" && unzip -q "$TMP"/easypytorch3d-*.whl 'pytorch3d/*' -d "$TMP/p3d"
tar -C "$TMP/p3d" -cf - pytorch3d | xz -T2 -6 > "$OUT/a/pytorch3d.tar.xz"
download "$OUT/a" "$(pin open-clip-torch)" "$(pin trimesh)" "$(pin OpenEXR)" ftfy
python -m pip wheel -q --no-deps -w "$OUT/a" "iopath==$(python -c 'import importlib.metadata as m; print(m.version("iopath"))')" portalocker

# b: MediaPipe and the face model. The model travels parsed (the 120 MB zip does not fit).
download "$OUT/b" "$(pin mediapipe)" "protobuf>=4.25.3,<5"
python - "$OUT/b/ict_facekit.npz" <<'EOF'
import sys
from core import assets
from core.geometry.face_model import load_face_model
load_face_model()  # parses into the cache once
source = assets.ict_facekit_path(download=False)
import shutil
shutil.copyfile(assets.model_cache_path(source), sys.argv[1])
EOF
xz -T2 -6 "$OUT/b/ict_facekit.npz"
# Four shared photos for the tests and timings (carried, never committed).
mkdir -p "$OUT/b/photos"
for name in 000002.jpg vd092.png 000031.jpg; do cp "$(find "$ROOT/../shared/faces" -name "$name" | head -1)" "$OUT/b/photos/"; done
cp "$ROOT/../shared/faces/3ddfa_v3/examples/1.jpg" "$OUT/b/photos/3ddfa_v3_1.jpg"

# c: numpy<2 (MediaPipe 0.10.21 asks for it).
download "$OUT/c" "$(pin numpy)"
du -sh "$OUT"/*
