#!/usr/bin/env bash
# kprl on a GPU machine that has torch but not dm_control, mujoco or tyro (they come packed by
# experiments/gpu/pack.py in .gpu_carry/). Run from anywhere; it works in the repository root.
#
#   experiments/gpu/run_grid.sh smoke                      # ~1 min: versions, CUDA, one rendered frame,
#                                                          # kprl doctor, ~200 updates on the GPU -> $OUT/smoke.log
#   experiments/gpu/run_grid.sh run JOBS.jsonl [DEADLINE_S]  # the jobs side by side until DEADLINE_S (default 540)
#                                                          # seconds after this script started -> $OUT/runs.tar.gz,
#                                                          # $OUT/gpu_run.log (experiments/gpu/launch.py)
#
# Settings (environment):
#   OUT               where results go (default /tmp/kprl_gpu_out)
#   KPRL_CARRY_DIR    the packed wheels and EGL .debs (default .gpu_carry); where it has no wheels (e.g. =none),
#                     the Python environment as it is
#   KPRL_SITE_DIR     where the wheels are installed (default /tmp/site)
#   KPRL_GPU_DEVICE   torch device of the runs (default cuda; cpu to try the script on a machine without a GPU)
#   KPRL_GRID_DIR     run dirs with checkpoints (default /tmp/grid; never under $OUT)
#   KPRL_GPU_PARALLEL, KPRL_GPU_THREADS, KPRL_GPU_VIDEO, KPRL_GPU_GRACE_S   see launch.py --help
#   KPRL_SMOKE_ARGS   extra `kprl train` options of the smoke run (they come last, so they override)
#   PYTHON            interpreter (default python3)
set -uo pipefail
START=$(date +%s)
cd "$(dirname "$0")/../.." || exit 1
MODE=${1:-}
PY=${PYTHON:-python3}
CARRY=${KPRL_CARRY_DIR:-.gpu_carry}
SITE=${KPRL_SITE_DIR:-/tmp/site}
DEVICE=${KPRL_GPU_DEVICE:-cuda}
GRID=${KPRL_GRID_DIR:-/tmp/grid}
OUT=${OUT:-/tmp/kprl_gpu_out}
mkdir -p "$OUT"
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1

setup() {
  # EGL userspace libraries, only where the machine has none (they are unpacked into /, so only as root).
  if [ -d "$CARRY/gl" ] && [ "$(id -u)" = 0 ] && ! ldconfig -p | grep 'libEGL.so.1' >/dev/null; then
    for f in "$CARRY"/gl/*.deb; do dpkg -x "$f" / || return 1; done
    ldconfig
    echo "installed EGL libraries from $CARRY/gl"
  fi
  local vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  if [ -f "$vendor" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
  fi
  local wheels=("$CARRY"/wheels/*.whl)
  if [ -e "${wheels[0]}" ]; then
    # Installed once per machine: a stamp names the wheels installed.
    local stamp="$SITE/.kprl_carry_stamp"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$(ls -l "${wheels[@]}")" ]; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" || return 1
      ls -l "${wheels[@]}" >"$stamp"
    fi
    export PYTHONPATH="$SITE:$PWD/src"
  else
    echo "no wheels in $CARRY/wheels: using the Python environment as it is"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

step() {  # step NAME COMMAND...: run it, say how it ended, remember a failure
  local name=$1
  shift
  echo "== $name"
  "$@"
  local rc=$?
  [ $rc -eq 0 ] || { echo "!! $name failed (exit $rc)"; FAILED+=("$name"); }
}

smoke() {
  FAILED=()
  local run=/tmp/kprl_smoke_run
  rm -rf "$run"
  step python "$PY" -c "import sys, torch; print(sys.version); \
print('torch', torch.__version__, 'cuda available', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  if command -v nvidia-smi >/dev/null; then
    step nvidia-smi nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu \
      --format=csv,noheader
  fi
  local expect=()
  [ -e "$SITE/dm_control" ] && expect=(--expect-under "$SITE")
  step render timeout 120 "$PY" experiments/gpu/render_check.py \
    "${expect[@]}" --png "$OUT/smoke_frame.png"
  step doctor timeout 120 "$PY" -m kprl doctor
  # 800 random seed steps (100 agent steps, then a burst of 100 updates), 800 more env steps with one update each.
  # shellcheck disable=SC2086
  step train timeout 300 "$PY" -m kprl train --agent sac_ae_imm \
    --augmentation crop --task cartpole_swingup --env-steps 1600 --seed-steps 800 --eval-every 1600 \
    --eval-episodes 1 --checkpoint-every 1600 --no-video --device "$DEVICE" --run-dir "$run" ${KPRL_SMOKE_ARGS:-}
  step train.csv "$PY" - "$run" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/train.csv")))
for r in rows:
    print({k: r[k] for k in ("env_step", "updates", "wall_hours", "env_steps_per_second")})
assert rows and int(float(rows[-1]["updates"])) > 0, "no updates logged"
EOF
  echo "== smoke took $(($(date +%s) - START)) s"
  if [ ${#FAILED[@]} -eq 0 ]; then echo "SMOKE OK"; else echo "SMOKE FAILED: ${FAILED[*]}"; return 1; fi
}

case $MODE in
  smoke)
    { setup && smoke; } 2>&1 | tee "$OUT/smoke.log"
    exit "${PIPESTATUS[0]}"
    ;;
  run)
    JOBS=${2:?usage: run_grid.sh run JOBS.jsonl [DEADLINE_S]}
    DEADLINE=${3:-540}
    setup > >(tee -a "$OUT/gpu_run.log") 2>&1 || exit 1
    if command -v nvidia-smi >/dev/null; then nvidia-smi >>"$OUT/gpu_run.log" 2>&1; fi
    args=(--jobs "$JOBS" --out "$OUT" --deadline-s "$DEADLINE" --started-at "$START" --grid-dir "$GRID"
          --device "$DEVICE" --python "$PY" --video "${KPRL_GPU_VIDEO:-False}" --grace-s "${KPRL_GPU_GRACE_S:-10}")
    [ -n "${KPRL_GPU_PARALLEL:-}" ] && args+=(--parallel "$KPRL_GPU_PARALLEL")
    [ -n "${KPRL_GPU_THREADS:-}" ] && args+=(--threads "$KPRL_GPU_THREADS")
    exec "$PY" experiments/gpu/launch.py "${args[@]}"
    ;;
  *)
    sed -n '2,20p' "$0"
    exit 2
    ;;
esac
