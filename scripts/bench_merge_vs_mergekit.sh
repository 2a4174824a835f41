#!/usr/bin/env bash
# Wall time and peak RSS of chorus merge vs mergekit 0.1.5 on the same 0.5B-sized inputs (Qwen2.5-0.5B
# shapes with an untied head: 630 M parameters, 2.5 GB of float32 per model, three models = 7.6 GB, as in
# issue 5). Inputs are random (a base and two fine-tunes = base + small noise), written once by
# scripts/bench_merge_inputs.py (bfloat16 copies: scripts/bench_merge_bf16_inputs.py).
# Usage: scripts/bench_merge_vs_mergekit.sh WORKDIR [PYTHON] [DTYPE: float32 | bfloat16]
# Needs mergekit in PYTHON's environment and a release build of chorus (cargo build --release).
set -euo pipefail
W=${1:?work dir}; PY=${2:-python3}; DT=${3:-float32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHORUS=${CHORUS:-$ROOT/target/release/chorus}
MK=$(dirname "$PY")/mergekit-yaml
[ -d "$W/base" ] || "$PY" "$ROOT/scripts/bench_merge_inputs.py" "$W"
cat > "$W/linear.yml" <<YML
merge_method: linear
models:
  - {model: $W/base, parameters: {weight: 1.0}}
  - {model: $W/ft1, parameters: {weight: 1.0}}
  - {model: $W/ft2, parameters: {weight: 1.0}}
dtype: $DT
YML
cat > "$W/ties.yml" <<YML
merge_method: ties
base_model: $W/base
models:
  - {model: $W/ft1, parameters: {weight: 1.0, density: 0.5}}
  - {model: $W/ft2, parameters: {weight: 1.0, density: 0.5}}
dtype: $DT
YML
run() { # name, command...
  local name=$1; shift
  cat "$W"/*/model*.safetensors > /dev/null  # warm page cache, as in the issue's numbers
  /usr/bin/time -f "%e %M" -o "$W/$name.time" "$@" > "$W/$name.log" 2>&1
  read -r secs kb < "$W/$name.time"
  echo "{\"run\": \"$name\", \"dtype\": \"$DT\", \"seconds\": $secs, \"peak_rss_gb\": $(echo "scale=2; $kb/1048576" | bc)}"
}
for m in linear ties; do
  rm -rf "$W/out-chorus-$m" "$W/out-mergekit-$m"
  run "chorus-$m" "$CHORUS" merge "$W/$m.yml" --out "$W/out-chorus-$m" --json
  run "mergekit-$m" "$MK" "$W/$m.yml" "$W/out-mergekit-$m" --no-copy-tokenizer
  rm -rf "$W/out-chorus-$m" "$W/out-mergekit-$m"
done
