#!/usr/bin/env bash
# The GPU check: one script for a CUDA machine (README: "GPU check"). It builds the CLI with the
# Gpu flavour of ONNX Runtime and reports, into $out/report.txt (and JSON beside it):
#   1. stories260K's llama2.c golden tokens through --ep cuda, fp32 and fp16 exports;
#   2. decode tok/s of the synth llama-110m preset (fp16, int4) at 1 and 8 concurrent sequences;
#   3. Memcpy nodes per decode run in ONNX Runtime's profile (host<->device copies inside the graph).
# With --ep cpu it runs the same steps on the CPU build: a dry run of the script itself.
#
# usage: tools/gpu/check.sh [--ep cuda|cpu] [--out DIR] [--quick] [--cli PATH]
set -euo pipefail
cd "$(dirname "$0")/../.."

ep=cuda out=artifacts/gpu-check quick=0 cli=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ep) ep="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --cli) cli="$2"; shift 2 ;;
    *) echo "check.sh: unknown argument '$1' (use --ep cuda|cpu, --out DIR, --quick, --cli PATH)" >&2; exit 2 ;;
  esac
done
case "$ep" in cuda|cpu) ;; *) echo "check.sh: --ep '$ep' must be cuda or cpu" >&2; exit 2 ;; esac

shared=../shared/models/stories260K
for f in stories260K.bin tok512.bin greedy_once_upon_a_time.json; do
  [ -f "$shared/$f" ] || { echo "check.sh: $shared/$f is missing: the check needs ../shared/models beside the repository" >&2; exit 2; }
done
python=/usr/bin/python3
[ -x "$python" ] || python=python3

mkdir -p "$out"
out=$(cd "$out" && pwd)
report="$out/report.txt"
: > "$report"
say() { echo "$*" | tee -a "$report"; }
failures=0
fail() { say "FAIL: $*"; failures=$((failures + 1)); }

say "gpu check: --ep $ep, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -n)"
if [ "$ep" = cuda ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /' | tee -a "$report" \
    || say "note: nvidia-smi not found"
fi

# ---- build ----
if [ -z "$cli" ]; then
  flavour=Cpu; [ "$ep" = cuda ] && flavour=Gpu
  say "building the CLI (-p:OrtFlavor=$flavour) into $out/cli"
  dotnet build tools/OnnxDecoder.Cli -c Release -p:OrtFlavor=$flavour -o "$out/cli" >"$out/build.log" 2>&1 \
    || { say "FAIL: the build failed; see $out/build.log"; exit 1; }
  cli="$out/cli/onnx-decoder"
fi
run() { "$cli" "$@"; }

# ---- 1. stories260K golden tokens, fp32 and fp16 ----
prompt_ids=$("$python" -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['prompt_ids'])))" "$shared/greedy_once_upon_a_time.json")
for precision in fp32 fp16; do
  folder="$out/stories260K-$precision"
  [ -f "$folder/genai_config.json" ] || run export --checkpoint "$shared/stories260K.bin" --tokenizer "$shared/tok512.bin" --out "$folder" --precision $precision >"$out/export-stories-$precision.log" 2>&1 \
    || { fail "export of stories260K $precision; see $out/export-stories-$precision.log"; continue; }
  if ! run generate --model "$folder" --prompt-ids "$prompt_ids" --max-tokens 400 --format json --ep "$ep" >"$out/stories-$precision.json" 2>"$out/stories-$precision.err"; then
    fail "stories260K $precision on $ep: $(tail -1 "$out/stories-$precision.err")"; continue
  fi
  # fp32 must give every golden token; fp16 kernels round differently, so at least the first 100.
  need=341; [ $precision = fp16 ] && need=100
  "$python" - "$out/stories-$precision.json" "$shared/greedy_once_upon_a_time.json" $need $precision "$ep" <<'PY' | tee -a "$report" || failures=$((failures + 1))
import json, sys
ours = json.load(open(sys.argv[1]))["token_ids"]
golden = json.load(open(sys.argv[2]))["generated_ids"]
need, precision, ep = int(sys.argv[3]), sys.argv[4], sys.argv[5]
same = next((i for i, (a, b) in enumerate(zip(ours, golden)) if a != b), min(len(ours), len(golden)))
ok = same >= need and (need < len(golden) or len(ours) == len(golden))
print(f"{'ok' if ok else 'FAIL'}: stories260K {precision} --ep {ep}: {same} of {len(golden)} golden tokens match in order "
      f"(generated {len(ours)}; needed {need})")
sys.exit(0 if ok else 1)
PY
done

# ---- 2. synth llama-110m decode tok/s at 1 and 8 concurrent (fp16, int4) ----
runs=3 gen=128; [ $quick = 1 ] && runs=1 gen=16
checkpoint="$out/llama-110m-checkpoint"
[ -f "$checkpoint/config.json" ] || run synth --preset llama-110m --out "$checkpoint" >"$out/synth.log" 2>&1 || fail "synth llama-110m; see $out/synth.log"
activations=fp16; [ "$ep" = cpu ] && activations=fp32  # the CPU kernels for int4 are the fp32-activation ones
for variant in fp16 int4; do
  folder="$out/llama-110m-$variant"
  args=(--precision $variant); [ $variant = int4 ] && args+=(--activations $activations)
  [ -f "$folder/genai_config.json" ] || run export --checkpoint "$checkpoint" --out "$folder" "${args[@]}" >"$out/export-110m-$variant.log" 2>&1 \
    || { fail "export of llama-110m $variant; see $out/export-110m-$variant.log"; continue; }
  if run bench --model "$folder" --concurrent 1,8 --prompt-tokens 16 --gen-tokens $gen --runs $runs --ep "$ep" --format json >"$out/bench-110m-$variant.json" 2>"$out/bench-110m-$variant.err"; then
    "$python" - "$out/bench-110m-$variant.json" $variant "$ep" <<'PY' | tee -a "$report" || failures=$((failures + 1))
import json, sys
for level in json.load(open(sys.argv[1])):
    print(f"llama-110m {sys.argv[2]} --ep {sys.argv[3]}: {level['concurrent_sequences']} concurrent: aggregate decode "
          f"{level['aggregate_decode_tokens_per_s']} tok/s (x{level['ratio_to_first']} of 1), end to end {level['end_to_end_tokens_per_s']} tok/s")
PY
  else
    fail "bench llama-110m $variant on $ep: $(tail -1 "$out/bench-110m-$variant.err")"
  fi
done

# ---- 3. host<->device copies per decode run, from ONNX Runtime's profile ----
# A Memcpy node (MemcpyFromHost / MemcpyToHost) is ONNX Runtime moving a tensor between host and
# device inside a run. With the KV cache resident on the device, a decode run needs none for the
# cache; nodes that do appear are small host-side shape arithmetic (listed by name in the JSON).
mkdir -p "$out/profile"
rm -f "$out"/profile/*.json
if run generate --model "$out/stories260K-fp32" --prompt-ids "$prompt_ids" --max-tokens 32 --format json --ep "$ep" --profile "$out/profile/stories" >/dev/null 2>"$out/profile.err"; then
  "$python" - "$out/profile" <<'PY' | tee -a "$report" || failures=$((failures + 1))
import glob, json, os, sys, collections
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.json")))
if not files:
    print("FAIL: no profile file was written"); sys.exit(1)
events = json.load(open(files[-1]))
runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
memcpy = [e for e in nodes if "Memcpy" in e.get("args", {}).get("op_name", "") or "Memcpy" in e["name"]]
decode_runs = max(1, len(runs) - 1)  # the first run is the prompt
names = collections.Counter(e["name"].removesuffix("_kernel_time") for e in memcpy)
summary = {"model_runs": len(runs), "node_events": len(nodes), "memcpy_node_events": len(memcpy),
           "memcpy_nodes_per_run": round(len(memcpy) / max(1, len(runs)), 2), "memcpy_nodes": dict(names)}
json.dump(summary, open(os.path.join(sys.argv[1], "memcpy-summary.json"), "w"), indent=1)
print(f"profile: {len(runs)} runs ({decode_runs} decode), {len(memcpy)} Memcpy node executions = "
      f"{summary['memcpy_nodes_per_run']} per run; by node: {dict(names) or 'none'}")
print("note: this counts copies inside the graph; an input bound from host memory is copied by the session before the "
      "nodes run and is not a node here, so the KV evidence is this count together with KV bound as device OrtValues")
PY
else
  fail "profiled run on $ep: $(tail -1 "$out/profile.err")"
fi

say "gpu check done: $failures failure(s); report in $report"
[ $failures -eq 0 ]
