#!/usr/bin/env bash
# Issue 13: run the CUDA path for real on a lent GPU machine and measure it (~6-8 min of device time).
#
# The `device` machine is bare and offline (Python 3.12, torch 2.11 + CUDA, numpy 2; no PyTorch3D,
# MediaPipe, open_clip, face model or photos) and each call carries at most 64 MiB. So, here first:
#   bash benchmarks/gpu_bundle.sh                      # -> .whl/a, .whl/b, .whl/c (git-ignored)
# then, through the device tool, back to back (what is installed lives in /tmp while the machine is warm):
#   run(carry=[".whl/a"], command="bash benchmarks/gpu_check.sh")   # installs PyTorch3D, open_clip, ...
#   run(carry=[".whl/b"], command="bash benchmarks/gpu_check.sh")   # installs MediaPipe + model, runs all
# If it reports that MediaPipe needs numpy<2, one more call with carry [".whl/c"] runs it.
#
# What it runs: the CUDA-marked tests and the renderer tests (PyTorch3D CUDA vs numba CPU: face ids,
# barycentrics, gradients), benchmarks/render_speed.py, and benchmarks/speed.py for fast, balanced and
# quality (ViT-B-32 with random weights: same time as real ones) on CUDA and on this machine's CPU.
# Results under $OUT (or out/gpu_check): env.txt, pytest.log, render_speed.txt, speed_*.json, summary.md.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
WORK=/tmp/likeness-gpu
SITE="$WORK/site"
OUT="${OUT:-$ROOT/out/gpu_check}"
PY="${PYTHON:-python3}"
PHOTOS="$WORK/shared/faces"  # the tests find photos under $LIKENESS_SHARED/faces
mkdir -p "$SITE" "$WORK/cache" "$PHOTOS" "$OUT"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 LIKENESS_CACHE_DIR="$WORK/cache" \
  LIKENESS_SHARED="$WORK/shared"

install_bundle() {  # wheels -> $SITE, *.tar.xz packages -> $SITE, the parsed model and photos -> $WORK
  local dir="$1" wheels
  wheels=("$dir"/*.whl)
  [ -e "${wheels[0]}" ] && "$PY" -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --upgrade \
    --target "$SITE" "${wheels[@]}"
  for t in "$dir"/*.tar.xz; do [ -e "$t" ] && tar -C "$SITE" -xJf "$t"; done
  [ -e "$dir/ict_facekit.npz.xz" ] && xz -dc "$dir/ict_facekit.npz.xz" > "$WORK/ict_facekit.npz"
  [ -d "$dir/photos" ] && cp "$dir"/photos/* "$PHOTOS/"
  echo "installed bundle $(basename "$dir")"
}
for dir in .whl/*/; do [ -d "$dir" ] && install_bundle "${dir%/}"; done
[ -f "$WORK/ict_facekit.npz" ] && export LIKENESS_ICT_FACEKIT="$WORK/ict_facekit.npz"

missing=$("$PY" - <<'EOF'
import importlib, os
missing = []
for name in ("pytorch3d._C", "open_clip", "mediapipe", "trimesh", "OpenEXR"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # report every reason (missing module, numpy ABI, ...)
        missing.append(f"{name} ({type(exc).__name__}: {str(exc)[:120]})")
if not os.environ.get("LIKENESS_ICT_FACEKIT"):
    missing.append("face model (bundle b)")
print("; ".join(missing))
EOF
)
if [ -n "$missing" ]; then
  echo "Not ready yet, still missing: $missing"
  echo "Call again carrying the next bundle (.whl/b, then .whl/c if MediaPipe needs numpy<2)."
  exit 0
fi

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import sys, torch, numpy; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, torch.cuda.is_available(), '| numpy', numpy.__version__)"
  echo "cpu cores: $(nproc)"
} 2>&1 | tee "$OUT/env.txt"

status=0
timeout 240 "$PY" -m pytest -p no:cacheprovider -q -rs tests/test_cuda.py tests/test_rendering.py \
  2>&1 | tee "$OUT/pytest.log" || status=1
timeout 90 "$PY" benchmarks/render_speed.py --sizes 224 512 --repeats 10 2>&1 | tee "$OUT/render_speed.txt"
# Mean of 3 photos after a warm-up on the GPU, of 2 on the CPU (its quality preset takes ~30 s a photo).
for run in "cuda 3 150" "cpu 2 240"; do
  read -r device limit seconds <<<"$run"
  timeout "$seconds" "$PY" benchmarks/speed.py --faces "$PHOTOS" --limit "$limit" --device "$device" \
    --clip-pretrained none --json "$OUT/speed_$device.json" 2>&1 | tee -a "$OUT/speed.log" || status=1
done

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {d: json.loads((out / f"speed_{d}.json").read_text()) for d in ("cuda", "cpu")
        if (out / f"speed_{d}.json").exists()}
if len(runs) == 2:
    print(f"GPU: {runs['cuda']['name']}; CPU: {runs['cpu']['name']} (mean seconds per photo over "
          f"{runs['cuda']['photos']} / {runs['cpu']['photos']} photos after a warm-up; GPU/CPU ratio)\n")
    print("| preset | stage | GPU s | CPU s | GPU/CPU |\n|---|---|---|---|---|")
    for preset, stages in runs["cuda"]["presets"].items():
        for stage, gpu in stages.items():
            cpu = runs["cpu"]["presets"][preset].get(stage, float("nan"))
            print(f"| {preset} | {stage} | {gpu:.2f} | {cpu:.2f} | {gpu / cpu if cpu else float('nan'):.2f} |")
EOF
exit $status
