#!/usr/bin/env bash
# The experiment of issue 6 on one machine: every (seed, agent) run of cartpole swingup at 100k env steps, one after
# another (each uses all cores), then the report. Rerun the same command to resume: finished runs are skipped by
# `kprl train` itself ("already trained"), an interrupted one resumes from its last checkpoint (every 10k env steps).
#
#   experiments/cartpole_swingup_100k.sh                 # seeds 1 2 3, agents sac_ae sac_imm sac_ae_imm
#   SEEDS="4 5" AGENTS=sac_imm experiments/cartpole_swingup_100k.sh
#
# Run dirs (with checkpoints and replay, ~2 GB each) go to runs/cartpole_100k/; their logs (config, CSVs, runtime,
# last IMM example figure) are copied to results/cartpole_100k/runs/, which is what is committed and what the report
# is regenerated from: kprl report results/cartpole_100k/runs --out results/cartpole_100k ...
set -euo pipefail
cd "$(dirname "$0")/.."
KPRL=${KPRL:-.venv/bin/kprl}
SEEDS=${SEEDS:-"1 2 3"}
AGENTS=${AGENTS:-"sac_ae sac_imm sac_ae_imm"}
RUNS=${RUNS:-runs/cartpole_100k}
RESULTS=${RESULTS:-results/cartpole_100k}
export MUJOCO_GL=${MUJOCO_GL:-egl}

for seed in $SEEDS; do
  for agent in $AGENTS; do
    # The poster's settings: SAC+AE as published (no augmentation); its keypoint agents with random crop (100 -> 84).
    case $agent in
      sac_ae) extra=(--augmentation none) ;;
      *) extra=(--augmentation crop) ;;
    esac
    run="$RUNS/${agent}_s${seed}"
    "$KPRL" train --agent "$agent" --task cartpole_swingup --env-steps 100000 --seed "$seed" "${extra[@]}" \
      --run-dir "$run"
    logs="$RESULTS/runs/${agent}_s${seed}"
    mkdir -p "$logs"
    cp "$run"/config.json "$run"/eval.csv "$run"/train.csv "$logs"/
    [ -f "$run/runtime.jsonl" ] && cp "$run/runtime.jsonl" "$logs"/
    last_figure=$(ls "$run"/figures/imm_example_*.png 2>/dev/null | tail -1 || true)
    if [ -n "$last_figure" ]; then mkdir -p "$logs/figures" && cp "$last_figure" "$logs/figures/"; fi
  done
done

"$KPRL" report "$RESULTS/runs" --out "$RESULTS" --imm-run results/keypoints/cartpole_k3
