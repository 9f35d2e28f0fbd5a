#!/usr/bin/env bash
# Exports every synth preset and stories260K with two builds of the CLI (both lowerings; fp32, fp16,
# int8, int4) and checks that each pair of model folders is byte-identical or, failing that, the same
# graph (compare_graphs.py) with bit-identical logits (`onnx-decoder compare`, largest difference 0).
#
#   tools/export-equivalence/run.sh BASELINE_CLI_DIR NEW_CLI_DIR WORK_DIR [--big]
#
# A CLI dir holds onnx-decoder.dll (dotnet build tools/OnnxDecoder.Cli -c Release -o DIR). Baseline
# exports are kept in WORK_DIR/baseline and reused when present. --big adds llama-110m (fp32, ort).
set -euo pipefail
baseline_cli=$1 new_cli=$2 work=$3 big=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
stories=$repo/../shared/models/stories260K/stories260K.bin
[ -f "$stories" ] || { echo "missing $stories (../shared beside the repo)"; exit 2; }
mkdir -p "$work/checkpoints" "$work/baseline" "$work/new"

presets=(llama-tiny mixtral-tiny gpt2-tiny)
[ "$big" = --big ] && presets+=(llama-110m)
failures=0
for preset in "${presets[@]}"; do
  for side in baseline new; do
    cli=$([ $side = baseline ] && echo "$baseline_cli" || echo "$new_cli")
    rm -rf "$work/checkpoints/$preset.$side"
    dotnet "$cli/onnx-decoder.dll" synth --preset "$preset" --seed 1 --out "$work/checkpoints/$preset.$side" > /dev/null
  done
  if ! diff -r "$work/checkpoints/$preset.baseline" "$work/checkpoints/$preset.new" > /dev/null; then
    echo "FAIL synth $preset: the two CLIs write different checkpoints"; failures=$((failures + 1))
  fi
done

cases=()
for preset in "${presets[@]}"; do
  for lowering in portable ort; do
    for precision in fp32 fp16 int8 int4; do
      [ "$preset" = llama-110m ] && { [ $lowering = ort ] && [ $precision = fp32 ] || continue; }
      cases+=("$preset|$work/checkpoints/$preset.baseline|$lowering|$precision")
    done
  done
done
for lowering in portable ort; do
  for precision in fp32 fp16 int8 int4; do cases+=("stories260K|$stories|$lowering|$precision"); done
done

for entry in "${cases[@]}"; do
  IFS='|' read -r name checkpoint lowering precision <<< "$entry"
  id="$name.$lowering.$precision"
  if [ ! -f "$work/baseline/$id/model.onnx" ]; then
    dotnet "$baseline_cli/onnx-decoder.dll" export --checkpoint "$checkpoint" --out "$work/baseline/$id" \
      --lowering "$lowering" --precision "$precision" > /dev/null
  fi
  rm -rf "$work/new/$id"
  if ! dotnet "$new_cli/onnx-decoder.dll" export --checkpoint "$checkpoint" --out "$work/new/$id" \
      --lowering "$lowering" --precision "$precision" > "$work/new/$id.log" 2>&1; then
    echo "FAIL $id: export failed: $(tail -1 "$work/new/$id.log")"; failures=$((failures + 1)); continue
  fi
  if diff -r "$work/baseline/$id" "$work/new/$id" > /dev/null; then
    echo "ok   $id: byte-identical"; continue
  fi
  # diff exits 1 when the folders differ, which is an outcome here, not an error (set -e and pipefail would stop the loop)
  differing=$({ diff -rq "$work/baseline/$id" "$work/new/$id" || true; } | sed "s|$work/||g" | tr '\n' ' ')
  if ! graph=$(/usr/bin/python3 "$here/compare_graphs.py" "$work/baseline/$id/model.onnx" "$work/new/$id/model.onnx"); then
    echo "FAIL $id: $graph ($differing)"; failures=$((failures + 1)); continue
  fi
  logits=$(dotnet "$baseline_cli/onnx-decoder.dll" compare --reference "$work/baseline/$id" --model "$work/new/$id" --positions 64)
  if [[ "$logits" =~ largest\ logit\ difference\ 0$ ]]; then
    echo "ok   $id: $graph, logits bit-identical (files differ: $differing)"
  else
    echo "FAIL $id: $graph but logits differ: $logits"; failures=$((failures + 1))
  fi
done
echo "$failures failure(s)"
[ "$failures" = 0 ]
