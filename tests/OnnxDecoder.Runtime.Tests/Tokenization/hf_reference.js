// Independent reference for our tokenizer.json pipeline: Hugging Face's own Rust `tokenizers`
// library (npm `tokenizers`, installed by .ci/run into artifacts/npm-tokenizers).
//
//   node hf_reference.js < request.json
//     request: {"tokenizer": PATH, "encode": [{"text": S, "add_special_tokens": B}, ...],
//               "decode": [{"ids": [N...], "skip_special_tokens": B}, ...],
//               "decode_encoded": B}
//     answer:  {"encode": [[N...], ...], "decode": [S, ...],
//               "decoded_encodings": [[without skip, with skip_special_tokens], ...] (when decode_encoded)}
//   node hf_reference.js --bench TOKENIZER_JSON CORPUS_TXT [ROUNDS]
//     encodes the corpus in chunks of paragraphs (>= 16384 UTF-16 units) one per call, sequentially, and prints
//     {"mb_per_s": X, "tokens": N} for the fastest round.
'use strict';
const path = require('path');
const fs = require('fs');
const root = path.resolve(process.env.NPM_TOKENIZERS || path.join(__dirname, '../../../artifacts/npm-tokenizers'));
const { Tokenizer } = require(path.join(root, 'node_modules', 'tokenizers'));

async function answer(request) {
  const tokenizer = Tokenizer.fromFile(request.tokenizer);
  const encode = [], decodedEncodings = [];
  for (const item of request.encode || []) {
    const ids = (await tokenizer.encode(item.text, null, { addSpecialTokens: item.add_special_tokens })).getIds();
    encode.push(ids);
    if (request.decode_encoded) decodedEncodings.push([await tokenizer.decode(ids, false), await tokenizer.decode(ids, true)]);
  }
  const decode = [];
  for (const item of request.decode || []) decode.push(await tokenizer.decode(item.ids, item.skip_special_tokens));
  return { encode, decode, decoded_encodings: decodedEncodings };
}

// Paragraphs (split on blank lines) grouped into chunks of at least 16384 UTF-16 units, so a
// call's fixed cost does not dominate; TokenizeCommand's --bench groups them the same way.
function benchChunks(corpus) {
  const chunks = [];
  let current = null;
  for (const paragraph of corpus.split('\n\n')) {
    current = current === null ? paragraph : current + '\n\n' + paragraph;
    if (current.length >= 16384) { chunks.push(current); current = null; }
  }
  if (current !== null) chunks.push(current);
  return chunks;
}

async function bench(tokenizerPath, corpusPath, rounds) {
  const tokenizer = Tokenizer.fromFile(tokenizerPath);
  const corpus = fs.readFileSync(corpusPath, 'utf8');
  const chunks = benchChunks(corpus);
  const bytes = Buffer.byteLength(corpus, 'utf8');
  let best = Infinity, tokens = 0;
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    let count = 0;
    for (const chunk of chunks) count += (await tokenizer.encode(chunk, null, { addSpecialTokens: false })).getIds().length;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    best = Math.min(best, seconds);
    tokens = count;
  }
  return { mb_per_s: bytes / 1e6 / best, tokens };
}

(async () => {
  const args = process.argv.slice(2);
  if (args[0] === '--bench') {
    process.stdout.write(JSON.stringify(await bench(args[1], args[2], Number(args[3] || 3))));
    return;
  }
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  process.stdout.write(JSON.stringify(await answer(request)));
})().catch(e => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
