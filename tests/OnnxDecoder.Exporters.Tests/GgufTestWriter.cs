using System.Buffers.Binary;
using System.Text;
using OnnxDecoder.Modeling;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>
/// Writes GGUF v3 files for tests from Hugging Face-layout weights, as llama.cpp's converter does:
/// llama names, q and k rows permuted from half-split to interleaved pairs, experts stacked, and
/// 2-D weights whose rows split into 32-element blocks optionally stored as Q8_0.
/// </summary>
public static class GgufTestWriter
{
    public static void Write(string path, DecoderConfig c, InMemoryWeights w, bool q8) => Write(path, c, w, q8 ? 8u : 0u);

    /// <summary>Writes with 2-D weights (rows a multiple of 32) as ggml type <paramref name="type"/>: 0 F32, 8 Q8_0, 2 Q4_0.</summary>
    public static void Write(string path, DecoderConfig c, InMemoryWeights w, uint type, IReadOnlyList<(string Key, uint Type, byte[] Value)>? extraMetadata = null)
    {
        var tensors = new List<(string Name, long[] Shape, uint Type, byte[] Data)>();
        void Add(string name, float[] values, long[] shape)
        {
            bool quantize = type != 0 && shape.Length >= 2 && shape[^1] % 32 == 0;
            byte[] data = !quantize ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray() : type == 8 ? QuantizeQ8(values) : QuantizeQ4(values);
            tensors.Add((name, shape, quantize ? type : 0u, data));
        }
        void Copy(string hf, string gguf) => Add(gguf, w.Values(hf), w.Shape(hf));

        Copy("model.embed_tokens.weight", "token_embd.weight");
        Copy("model.norm.weight", "output_norm.weight");
        if (!c.TieWordEmbeddings) Copy("lm_head.weight", "output.weight");
        for (int i = 0; i < c.NumLayers; i++)
        {
            string layer = $"model.layers.{i}", blk = $"blk.{i}";
            Copy($"{layer}.input_layernorm.weight", $"{blk}.attn_norm.weight");
            Add($"{blk}.attn_q.weight", ToInterleaved(w.Values($"{layer}.self_attn.q_proj.weight"), c.NumHeads, c.HeadDim, c.HiddenSize), w.Shape($"{layer}.self_attn.q_proj.weight"));
            Add($"{blk}.attn_k.weight", ToInterleaved(w.Values($"{layer}.self_attn.k_proj.weight"), c.NumKvHeads, c.HeadDim, c.HiddenSize), w.Shape($"{layer}.self_attn.k_proj.weight"));
            Copy($"{layer}.self_attn.v_proj.weight", $"{blk}.attn_v.weight");
            Copy($"{layer}.self_attn.o_proj.weight", $"{blk}.attn_output.weight");
            Copy($"{layer}.post_attention_layernorm.weight", $"{blk}.ffn_norm.weight");
            if (!c.IsMoe)
            {
                Copy($"{layer}.mlp.gate_proj.weight", $"{blk}.ffn_gate.weight");
                Copy($"{layer}.mlp.up_proj.weight", $"{blk}.ffn_up.weight");
                Copy($"{layer}.mlp.down_proj.weight", $"{blk}.ffn_down.weight");
                continue;
            }
            string moe = $"{layer}.block_sparse_moe";
            Copy($"{moe}.gate.weight", $"{blk}.ffn_gate_inp.weight");
            foreach (var (part, name) in new[] { ("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"), ("w2", "ffn_down_exps") })
            {
                var shape = w.Shape($"{moe}.experts.0.{part}.weight");
                var stacked = Enumerable.Range(0, c.NumExperts).SelectMany(e => w.Values($"{moe}.experts.{e}.{part}.weight")).ToArray();
                Add($"{blk}.{name}.weight", stacked, [c.NumExperts, .. shape]);
            }
        }

        var metadata = new List<(string Key, uint Type, byte[] Value)>
        {
            ("general.architecture", 8, Str("llama")),
            ("general.alignment", 4, U32(32)),
            ("llama.context_length", 4, U32((uint)c.MaxPositions)),
            ("llama.embedding_length", 4, U32((uint)c.HiddenSize)),
            ("llama.block_count", 4, U32((uint)c.NumLayers)),
            ("llama.feed_forward_length", 4, U32((uint)c.IntermediateSize)),
            ("llama.attention.head_count", 4, U32((uint)c.NumHeads)),
            ("llama.attention.head_count_kv", 4, U32((uint)c.NumKvHeads)),
            ("llama.attention.layer_norm_rms_epsilon", 6, F32((float)c.NormEps)),
            ("llama.rope.freq_base", 6, F32((float)c.RopeTheta)),
            ("tokenizer.ggml.bos_token_id", 4, U32((uint)c.BosTokenId)),
            ("tokenizer.ggml.eos_token_id", 4, U32((uint)c.EosTokenIds[0])),
        };
        if (c.IsMoe)
        {
            metadata.Add(("llama.expert_count", 4, U32((uint)c.NumExperts)));
            metadata.Add(("llama.expert_used_count", 4, U32((uint)c.ExpertsPerToken)));
        }
        if (extraMetadata is not null) metadata.AddRange(extraMetadata);
        WriteFile(path, metadata, tensors);
    }

    /// <summary>Writes a GGUF file; <paramref name="offsets"/> (relative to the data section) replaces the
    /// packed, 32-aligned layout, so tests can write files whose tensors overlap or are misaligned.</summary>
    public static void WriteFile(string path, IReadOnlyList<(string Key, uint Type, byte[] Value)> metadata, IReadOnlyList<(string Name, long[] Shape, uint Type, byte[] Data)> tensors,
        IReadOnlyList<ulong>? offsets = null)
    {
        var header = new MemoryStream();
        header.Write(U32(0x46554747));
        header.Write(U32(3));
        header.Write(U64((ulong)tensors.Count));
        header.Write(U64((ulong)metadata.Count));
        foreach (var (key, type, value) in metadata)
        {
            header.Write(Str(key));
            header.Write(U32(type));
            header.Write(value);
        }
        ulong offset = 0;
        var placed = new List<ulong>();
        for (int i = 0; i < tensors.Count; i++)
        {
            var (name, shape, type, data) = tensors[i];
            header.Write(Str(name));
            header.Write(U32((uint)shape.Length));
            foreach (var dim in shape.Reverse()) header.Write(U64((ulong)dim)); // GGUF lists ne innermost first
            header.Write(U32(type));
            placed.Add(offsets?[i] ?? offset);
            header.Write(U64(placed[i]));
            offset = (offset + (ulong)data.Length + 31) / 32 * 32;
        }
        using var file = File.Create(path);
        file.Write(header.ToArray());
        file.Write(new byte[(32 - file.Position % 32) % 32]);
        long dataStart = file.Position;
        for (int i = 0; i < tensors.Count; i++)
        {
            long at = dataStart + (long)placed[i];
            if (at > file.Length) file.SetLength(at);
            file.Position = at;
            file.Write(tensors[i].Data);
        }
    }

    /// <summary>Per head, half-split rows (i, i + d/2) become interleaved rows (2i, 2i + 1).</summary>
    public static float[] ToInterleaved(float[] weight, int heads, int headDim, int columns)
    {
        var result = new float[weight.Length];
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < headDim / 2; i++)
            {
                Array.Copy(weight, (h * headDim + i) * columns, result, (h * headDim + 2 * i) * columns, columns);
                Array.Copy(weight, (h * headDim + i + headDim / 2) * columns, result, (h * headDim + 2 * i + 1) * columns, columns);
            }
        return result;
    }

    /// <summary>ggml's Q8_0: per 32 values, d = max|x| / 127 (stored as f16), q = round(x / d).</summary>
    public static byte[] QuantizeQ8(float[] values)
    {
        var output = new byte[values.Length / 32 * 34];
        for (int block = 0; block < values.Length / 32; block++)
        {
            float max = 0;
            for (int j = 0; j < 32; j++) max = Math.Max(max, Math.Abs(values[block * 32 + j]));
            float d = max / 127;
            float inverse = d == 0 ? 0 : 1 / d;
            BinaryPrimitives.WriteUInt16LittleEndian(output.AsSpan(block * 34), BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < 32; j++) output[block * 34 + 2 + j] = (byte)(sbyte)MathF.Round(values[block * 32 + j] * inverse);
        }
        return output;
    }

    /// <summary>ggml's Q4_0: per 32 values, d = (the value of largest magnitude) / -8 (f16), q = min(15, trunc(x / d + 8.5)),
    /// element j in the low nibble of byte j and element j + 16 in its high nibble.</summary>
    public static byte[] QuantizeQ4(float[] values)
    {
        var output = new byte[values.Length / 32 * 18];
        for (int block = 0; block < values.Length / 32; block++)
        {
            float max = 0, absMax = 0;
            for (int j = 0; j < 32; j++)
            {
                float v = values[block * 32 + j];
                if (Math.Abs(v) > absMax) { absMax = Math.Abs(v); max = v; }
            }
            float d = max / -8, inverse = d == 0 ? 0 : 1 / d;
            BinaryPrimitives.WriteUInt16LittleEndian(output.AsSpan(block * 18), BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < 16; j++)
            {
                int low = Math.Min(15, (int)(sbyte)(values[block * 32 + j] * inverse + 8.5f));
                int high = Math.Min(15, (int)(sbyte)(values[block * 32 + 16 + j] * inverse + 8.5f));
                output[block * 18 + 2 + j] = (byte)(low | high << 4);
            }
        }
        return output;
    }

    public static byte[] U32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); return b; }
    public static byte[] U64(ulong v) { var b = new byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); return b; }
    public static byte[] F32(float v) { var b = new byte[4]; BinaryPrimitives.WriteSingleLittleEndian(b, v); return b; }
    public static byte[] Str(string s) { var bytes = Encoding.UTF8.GetBytes(s); return [.. U64((ulong)bytes.Length), .. bytes]; }
}
