#!/usr/bin/python3
"""An onnxruntime-genai-style model folder from a llama2.c checkpoint, written without OnnxDecoder.

This is the independent builder the runtime's acceptance test runs: Python with Debian's
python3-onnx and python3-numpy only, nothing from the C# code. It writes what a model folder from
onnxruntime-genai's builder looks like, in the variant that is hardest for a runtime that was
written against its own exporter:

  * attention through com.microsoft GroupQueryAttention, past and present sharing one buffer
    (search.past_present_share_buffer = true in genai_config.json);
  * no position_ids input: positions come from the attention mask inside the graph
    (CumSum(mask) - 1), seqlens_k = ReduceSum(mask) - 1, total_sequence_length = mask width;
  * genai_config.json, and tokenizer.json + tokenizer_config.json converted from tok512.bin.

Usage: build.py CHECKPOINT.bin TOKENIZER.bin OUT_FOLDER [--max-length N]

Graph, per layer (x: [batch, seq, dim]):

    x --RMSNorm--> h --MatMul wq--> q --RotaryEmbedding(pos)--> q'
                     --MatMul wk--> k --RotaryEmbedding(pos)--> k'
                     --MatMul wv--> v
    (q', k', v, past_k, past_v, seqlens_k, total_len) --GroupQueryAttention--> a, present_k, present_v
    x + a @ wo^T --RMSNorm--> h2 --> x + w2(silu(w1 h2) * w3 h2)
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MAX_CHECKPOINT_BYTES = 1 << 31


def fail(message):
    sys.exit(f"build.py: {message}")


def read_checkpoint(path):
    """llama2.c checkpoint, legacy (v0) or version 1: config dict and weight arrays ([out, in] row-major)."""
    size = os.path.getsize(path)
    if size > MAX_CHECKPOINT_BYTES:
        fail(f"{path} is {size} bytes, over the {MAX_CHECKPOINT_BYTES}-byte limit")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        fail(f"{path} is too short for a llama2.c header")
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic == 0x616B3432:
        version = struct.unpack_from("<i", data, 4)[0]
        if version != 1:
            fail(f"{path}: llama2.c checkpoint version {version} is not supported (1 or the legacy format)")
        dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack_from("<7i", data, 8)
        shared = data[36] != 0
        offset = 256
    else:
        dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack_from("<7i", data, 0)
        shared = vocab > 0
        vocab = abs(vocab)
        offset = 28
    for name, value in [("dim", dim), ("hidden_dim", hidden), ("n_layers", layers), ("n_heads", heads),
                        ("n_kv_heads", kv_heads), ("vocab_size", vocab), ("seq_len", seq_len)]:
        if not 0 < value <= 1 << 20:
            fail(f"{path}: header {name} = {value} is out of range")
    if dim % heads or heads % kv_heads:
        fail(f"{path}: dim {dim}, n_heads {heads}, n_kv_heads {kv_heads} do not divide")
    head = dim // heads
    kv_dim = kv_heads * head
    floats = np.frombuffer(data, dtype="<f4", offset=offset)
    cursor = [0]

    def take(*shape):
        count = int(np.prod(shape))
        if cursor[0] + count > floats.size:
            fail(f"{path}: ends before the weights do (needs more than {floats.size} floats)")
        array = floats[cursor[0]:cursor[0] + count].reshape(shape).astype(np.float32)
        cursor[0] += count
        return array

    w = {}
    if magic == 0x616B3432:
        w["attn_norm"] = take(layers, dim)
        w["ffn_norm"] = take(layers, dim)
        w["final_norm"] = take(dim)
        w["embed"] = take(vocab, dim)
        w["wq"], w["wk"], w["wv"] = take(layers, dim, dim), take(layers, kv_dim, dim), take(layers, kv_dim, dim)
        w["wo"] = take(layers, dim, dim)
        w["w1"], w["w2"], w["w3"] = take(layers, hidden, dim), take(layers, dim, hidden), take(layers, hidden, dim)
    else:
        w["embed"] = take(vocab, dim)
        w["attn_norm"] = take(layers, dim)
        w["wq"], w["wk"], w["wv"] = take(layers, dim, dim), take(layers, kv_dim, dim), take(layers, kv_dim, dim)
        w["wo"] = take(layers, dim, dim)
        w["ffn_norm"] = take(layers, dim)
        w["w1"], w["w2"], w["w3"] = take(layers, hidden, dim), take(layers, dim, hidden), take(layers, hidden, dim)
        w["final_norm"] = take(dim)
        take(seq_len, head // 2)  # rotary tables, unused
        take(seq_len, head // 2)
    w["output"] = w["embed"] if shared else take(vocab, dim)
    config = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, seq_len=seq_len, head=head)
    return config, w


class Graph:
    """Nodes, initializers and names in the genai builder's style (/model/layers.N/attn/..., {node}/output_0)."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def const(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, name, inputs, outputs=1, domain="", **attrs):
        names = [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, domain=domain or None, **attrs))
        return names[0] if outputs == 1 else names

    def rms_norm(self, name, x, weight):
        # x / sqrt(mean(x^2) + 1e-5) * weight, in plain ops.
        square = self.op("Mul", f"{name}/Mul", [x, x])
        mean = self.op("ReduceMean", f"{name}/ReduceMean", [square], axes=[-1], keepdims=1)
        eps = self.op("Add", f"{name}/Add", [mean, "/model/constants/eps"])
        root = self.op("Sqrt", f"{name}/Sqrt", [eps])
        normed = self.op("Div", f"{name}/Div", [x, root])
        return self.op("Mul", f"{name}/MulWeight", [normed, weight])


def build_model(config, w, max_length):
    g = Graph()
    layers, heads, kv_heads, head = config["layers"], config["heads"], config["kv_heads"], config["head"]
    g.const("/model/constants/eps", np.array(1e-5, np.float32))
    g.const("/model/constants/one_i64", np.array([1], np.int64))
    g.const("/model/constants/axis1", np.array([1], np.int64))
    g.const("/model/constants/big_i64", np.array([1 << 62], np.int64))
    g.const("/model/constants/index1", np.array(1, np.int64))

    # Positions and GroupQueryAttention's lengths, all from attention_mask [batch, total].
    mask_sum = g.op("ReduceSum", "/model/attn_mask_reformat/ReduceSum", ["attention_mask", "/model/constants/axis1"], keepdims=0)  # [batch]
    seqlens = g.op("Sub", "/model/attn_mask_reformat/Sub", [mask_sum, "/model/constants/one_i64"])
    seqlens_k = g.op("Cast", "/model/attn_mask_reformat/seqlens_k", [seqlens], to=TensorProto.INT32)
    mask_shape = g.op("Shape", "/model/attn_mask_reformat/Shape", ["attention_mask"])
    total = g.op("Gather", "/model/attn_mask_reformat/Gather", [mask_shape, "/model/constants/index1"], axis=0)  # scalar
    total_len = g.op("Cast", "/model/attn_mask_reformat/total_seq_len", [total], to=TensorProto.INT32)
    cumsum = g.op("CumSum", "/model/pos_ids_reformat/CumSum", ["attention_mask", "/model/constants/index1"])
    positions_all = g.op("Sub", "/model/pos_ids_reformat/Sub", [cumsum, "/model/constants/one_i64"])  # [batch, total]
    ids_shape = g.op("Shape", "/model/pos_ids_reformat/Shape", ["input_ids"])
    seq = g.op("Gather", "/model/pos_ids_reformat/Gather", [ids_shape, "/model/constants/one_i64"], axis=0)  # [1]
    start = g.op("Neg", "/model/pos_ids_reformat/Neg", [seq])
    positions_raw = g.op("Slice", "/model/pos_ids_reformat/Slice", [positions_all, start, "/model/constants/big_i64", "/model/constants/axis1"])
    # Left padding has cumsum 0: clamp its -1 to 0, a harmless position.
    zero = g.const("/model/constants/zero_i64", np.array(0, np.int64))
    positions = g.op("Max", "/model/pos_ids_reformat/Max", [positions_raw, zero])  # [batch, seq]

    # Rotary tables for interleaved pairs (2j, 2j+1): angle = position * 10000^(-2j / head).
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, head, 2, dtype=np.float64) / head))
    angles = np.outer(np.arange(max_length, dtype=np.float64), inv_freq)
    cos_cache = g.const("cos_cache", np.cos(angles).astype(np.float32))  # [max_length, head/2]
    sin_cache = g.const("sin_cache", np.sin(angles).astype(np.float32))

    x = g.op("Gather", "/model/embed_tokens/Gather", [g.const("model.embed_tokens.weight", w["embed"]), "input_ids"], axis=0)
    for i in range(layers):
        p = f"/model/layers.{i}"
        h = g.rms_norm(f"{p}/input_layernorm", x, g.const(f"model.layers.{i}.input_layernorm.weight", w["attn_norm"][i]))

        def linear(name, inp, weight):
            return g.op("MatMul", f"{p}/{name}/MatMul", [inp, g.const(f"model.layers.{i}.{name}.weight.T", np.ascontiguousarray(weight.T))])

        q = linear("attn/q_proj", h, w["wq"][i])
        k = linear("attn/k_proj", h, w["wk"][i])
        v = linear("attn/v_proj", h, w["wv"][i])
        q = g.op("RotaryEmbedding", f"{p}/attn/q_rotary/RotaryEmbedding", [q, positions, cos_cache, sin_cache], domain="com.microsoft",
                 interleaved=1, num_heads=heads)
        k = g.op("RotaryEmbedding", f"{p}/attn/k_rotary/RotaryEmbedding", [k, positions, cos_cache, sin_cache], domain="com.microsoft",
                 interleaved=1, num_heads=kv_heads)
        attn, _, _ = g.op("GroupQueryAttention", f"{p}/attn/GroupQueryAttention",
                          [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total_len], outputs=3,
                          domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads)
        g.nodes[-1].output[1] = f"present.{i}.key"
        g.nodes[-1].output[2] = f"present.{i}.value"
        x = g.op("Add", f"{p}/attn/residual/Add", [x, linear("attn/o_proj", attn, w["wo"][i])])
        h = g.rms_norm(f"{p}/post_attention_layernorm", x, g.const(f"model.layers.{i}.post_attention_layernorm.weight", w["ffn_norm"][i]))
        gate = linear("mlp/gate_proj", h, w["w1"][i])
        silu = g.op("Mul", f"{p}/mlp/act_fn/Mul", [gate, g.op("Sigmoid", f"{p}/mlp/act_fn/Sigmoid", [gate])])
        up = linear("mlp/up_proj", h, w["w3"][i])
        x = g.op("Add", f"{p}/mlp/residual/Add", [x, linear("mlp/down_proj", g.op("Mul", f"{p}/mlp/Mul", [silu, up]), w["w2"][i])])
    h = g.rms_norm("/model/norm", x, g.const("model.norm.weight", w["final_norm"]))
    logits = g.op("MatMul", "/lm_head/MatMul", [h, g.const("lm_head.weight.T", np.ascontiguousarray(w["output"].T))])
    g.nodes[-1].output[0] = "logits"

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "sequence_length", config["vocab"]])]
    for i in range(layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", f32, ["batch_size", kv_heads, "past_sequence_length", head]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", f32, ["batch_size", kv_heads, "total_sequence_length", head]))
    graph = helper.make_graph(g.nodes, "main_graph", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="genai-style-builder")
    model.ir_version = 8
    return model


def genai_config(config, max_length):
    return {
        "model": {
            "bos_token_id": 1,
            "context_length": max_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": config["head"],
                "hidden_size": config["dim"],
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"},
                "num_attention_heads": config["heads"],
                "num_hidden_layers": config["layers"],
                "num_key_value_heads": config["kv_heads"],
            },
            # llama2.c ends a story by generating BOS; </s> is the tokenizer's end.
            "eos_token_id": [1, 2],
            "pad_token_id": 0,
            "type": "llama",
            "vocab_size": config["vocab"],
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": max_length, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 50, "top_p": 1.0,
        },
    }


def read_llama2c_tokenizer(path, vocab_size):
    """tok512.bin: int32 max_token_length, then per id float32 score, int32 length, bytes."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) > 64 << 20:
        fail(f"{path} is over 64 MiB")
    offset = 4
    pieces, scores = [], []
    for i in range(vocab_size):
        if offset + 8 > len(data):
            fail(f"{path} ends at token {i} of {vocab_size}")
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if not 0 <= length <= 1024 or offset + length > len(data):
            fail(f"{path}: token {i} has a bad length {length}")
        try:
            pieces.append(data[offset:offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            fail(f"{path}: token {i} is not valid UTF-8")
        scores.append(score)
        offset += length
    return pieces, scores


def tokenizer_json(pieces, scores):
    """A SentencePiece-style BPE tokenizer.json: spaces as U+2581, byte fallback, merges ranked by
    the merged piece's llama2.c score (llama2.c merges the best-scoring pair first)."""
    vocab = {}
    for i, piece in enumerate(pieces):
        if i == 0:
            token = "<unk>"
        elif i == 1:
            token = "<s>"
        elif i == 2:
            token = "</s>"
        else:
            token = piece.replace(" ", "\u2581")
        vocab[token] = i
    merges = []
    for merged, i in sorted(vocab.items(), key=lambda kv: (-scores[kv[1]], kv[1])):
        if i < 3 or merged.startswith("<0x") or len(merged) < 2:
            continue
        for cut in range(1, len(merged)):
            left, right = merged[:cut], merged[cut:]
            if left in vocab and right in vocab:
                merges.append(f"{left} {right}")
    special = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
               for i, t in enumerate(["<unk>", "<s>", "</s>"])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": merges},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("tokenizer")
    parser.add_argument("out")
    parser.add_argument("--max-length", type=int, default=None, help="context length (default: the checkpoint's seq_len)")
    args = parser.parse_args()
    config, weights = read_checkpoint(args.checkpoint)
    max_length = args.max_length or config["seq_len"]
    if not 0 < max_length <= config["seq_len"]:
        fail(f"--max-length {max_length} must be between 1 and the checkpoint's seq_len {config['seq_len']}")
    os.makedirs(args.out, exist_ok=True)
    model = build_model(config, weights, max_length)
    onnx.save(model, os.path.join(args.out, "model.onnx"))
    with open(os.path.join(args.out, "genai_config.json"), "w") as f:
        json.dump(genai_config(config, max_length), f, indent=4)
    pieces, scores = read_llama2c_tokenizer(args.tokenizer, config["vocab"])
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(pieces, scores), f, ensure_ascii=False)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "model_max_length": max_length, "tokenizer_class": "LlamaTokenizer", "legacy": True}, f, indent=4)
    print(f"wrote {args.out}: {config['layers']} layers, GroupQueryAttention with a shared KV buffer, no position_ids, context {max_length}")


if __name__ == "__main__":
    main()
