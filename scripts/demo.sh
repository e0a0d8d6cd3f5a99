#!/usr/bin/env bash
# The main job on the embedded default: synthetic CT-RATE sample, SQLite Dagster instance,
# offline backends. Everything lands under data/ (override with RAD3D_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${RAD3D_OUT:-data}
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/$OUT/dagster_home}
.venv/bin/rad3d sample-data --out "$OUT/sample_ctrate" --patients "${RAD3D_SAMPLE_PATIENTS:-40}"
.venv/bin/rad3d build --ctrate-root "$OUT/sample_ctrate" --out "$OUT"
board="$OUT/reports/leaderboard"
if [ -f "$board/table4.md" ]; then
  printf '\nLeaderboard (the paper'"'"'s Table 4 layout; %s):\n\n' "$board/table4.md"
  cat "$board/table4.md"
fi
cat <<MSG

Done. Look at:
  $OUT/3DRAD/test, $OUT/3DRAD/train     the benchmark and training set in the 3D-RAD release layout
  $OUT/tables/<asset>/*.parquet         every asset's table (one file per partition)
  $OUT/quarantine/                      input rows set aside, with the reason
  $OUT/volumes/<profile>/*.npy          model-ready volumes (manifest: $OUT/tables/volumes/)
  $OUT/reports/leaderboard/             Table 4 with 95% intervals (CSV, Markdown), pairwise tests, charts (PNG)
  $OUT/hub/3DRAD/                       the release as a Hugging Face dataset (Parquet + dataset card)
  $OUT/reports/                         scoring consistency, spatial questions, statistics and plots
Evaluate a model of your own on it (one command; the runs show in the UI):
  .venv/bin/rad3d eval --model file:PREDICTIONS.jsonl --out $OUT
Open the Dagster UI (runs, asset graph, checks) with:
  .venv/bin/rad3d ui --out $OUT         then browse http://127.0.0.1:3000
MSG
