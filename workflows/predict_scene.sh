#!/usr/bin/env bash
# Predict one scene into an output folder; safe to re-run (skips finished outputs, never leaves partial files).
# usage: workflows/predict_scene.sh SCENE.tif MODEL OUT_DIR [extra geoseg predict options]
set -euo pipefail
scene=$1 model=$2 out=$3; shift 3
if [ -f "$out/landcover.tif" ] && [ -f "$out/run.json" ]; then
  echo "already done: $out" >&2
  exit 0
fi
exec geoseg predict "$scene" --model "$model" -o "$out" --quiet "$@"
