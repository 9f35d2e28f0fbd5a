using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Gguf;
using OnnxDecoder.Exporters.Tokenizers;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Bench;

/// <summary>
/// Writes a dense llama checkpoint as a GGUF v3 file llama.cpp loads, so that llama.cpp runs the very
/// weights we export. Hand-written from the GGUF v3 layout: header (magic, version, tensor count,
/// metadata count), metadata key/values, tensor infos (name, dims innermost first, ggml type, offset
/// from the data section), padding to the alignment, then each tensor's data, aligned.
/// Weights: 1-D tensors (norms) stay F32; 2-D ones take the chosen type, except rows not a multiple of
/// the 32-wide block, which fall back to F16 (as llama.cpp's own quantizer does). Q and K rows are
/// put in the interleaved rotary layout GGUF llama tensors use.
/// </summary>
public static class GgufWriter
{
    private const int Alignment = 32;

    public static void Write(string path, Checkpoint checkpoint, GgmlType weightType, IReadOnlyList<(string Piece, float Score, SentencePieceModelWriter.PieceType Type)> vocabulary)
    {
        if (weightType is not (GgmlType.F32 or GgmlType.Q8_0 or GgmlType.Q4_0)) throw new ArgumentException($"GGUF weight type {weightType} is not written (F32, Q8_0, Q4_0)");
        var c = checkpoint.Config;
        if (c.ModelType != "llama" || c.NumExperts > 0 || c.AttentionBias || c.ProjectionBias)
            throw new ArgumentException($"{checkpoint.Description}: only dense llama checkpoints without biases are written as GGUF (found {c.ModelType})");
        if (vocabulary.Count != c.VocabSize) throw new ArgumentException($"the vocabulary has {vocabulary.Count} pieces but the model {c.VocabSize} rows");

        var tensors = new List<(string GgufName, string Name, GgmlType Type, long[] Shape)>();
        var rotated = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (ggufName, name, _) in FamilyRegistry.For(c).GgufNames(c))
        {
            if (ggufName.EndsWith(".attn_q.weight", StringComparison.Ordinal) || ggufName.EndsWith(".attn_k.weight", StringComparison.Ordinal)) rotated.Add(name);
            if (!checkpoint.Weights.Names.Contains(name))
            {
                if (ggufName == "output.weight" && c.TieWordEmbeddings) continue; // tied: llama.cpp reuses token_embd
                throw new ArgumentException($"{checkpoint.Description}: tensor '{name}' (GGUF {ggufName}) is missing");
            }
            var shape = checkpoint.Weights.Get(name).Shape.ToArray();
            var type = shape.Length == 1 ? GgmlType.F32
                : weightType != GgmlType.F32 && shape[^1] % 32 != 0 ? GgmlType.F16
                : weightType;
            tensors.Add((ggufName, name, type, shape));
        }

        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        var metadata = Metadata(c, weightType, vocabulary);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, write) in metadata)
        {
            WriteString(w, key);
            write(w);
        }
        long offset = 0;
        foreach (var (ggufName, _, type, shape) in tensors)
        {
            WriteString(w, ggufName);
            w.Write((uint)shape.Length);
            foreach (long d in shape.Reverse()) w.Write((ulong)d); // GGUF lists ne[0] (the contiguous axis) first
            w.Write((uint)type);
            w.Write((ulong)offset);
            offset = Align(offset + ByteLength(type, shape));
        }
        Pad(w);
        long dataStart = stream.Position;
        foreach (var (_, name, type, shape) in tensors)
        {
            var values = Floats(checkpoint.Weights.Get(name));
            if (rotated.Contains(name) && c.RotaryLayout == RotaryLayout.HalfSplit) values = ToInterleaved(values, shape, c.HeadDim);
            WriteTensor(w, type, values, shape);
            Pad(w, dataStart);
        }
    }

    /// <summary>The llama vocabulary of a llama2.c tokenizer file, as the exporter reads it.</summary>
    public static List<(string, float, SentencePieceModelWriter.PieceType)> VocabularyOf(string llama2cTokenizer, int vocabSize) =>
        SentencePieceModelWriter.Pieces(Exporters.Llama2c.Llama2cTokenizer.Read(llama2cTokenizer, vocabSize));

    /// <summary>
    /// A placeholder llama vocabulary for checkpoints whose tokenizer is not SentencePiece (the synth
    /// presets): unk, BOS, EOS, the 256 byte pieces, then distinct pieces. The benchmark feeds token ids,
    /// so only the count and the special ids matter.
    /// </summary>
    public static List<(string, float, SentencePieceModelWriter.PieceType)> PlaceholderVocabulary(DecoderConfig c)
    {
        if (c.VocabSize < 259 + 1) throw new ArgumentException($"a placeholder llama vocabulary needs more than 259 pieces, the model has {c.VocabSize}");
        var pieces = new List<(string, float, SentencePieceModelWriter.PieceType)>(c.VocabSize)
        {
            ("<unk>", 0, SentencePieceModelWriter.PieceType.Unknown), ("<s>", 0, SentencePieceModelWriter.PieceType.Control), ("</s>", 0, SentencePieceModelWriter.PieceType.Control),
        };
        for (int b = 0; b < 256; b++) pieces.Add(($"<0x{b:X2}>", 0, SentencePieceModelWriter.PieceType.Byte));
        for (int i = pieces.Count; i < c.VocabSize; i++) pieces.Add(($"\u2581t{i}", -i, SentencePieceModelWriter.PieceType.Normal));
        return pieces;
    }

    private static List<(string Key, Action<BinaryWriter> Write)> Metadata(DecoderConfig c, GgmlType weightType,
        IReadOnlyList<(string Piece, float Score, SentencePieceModelWriter.PieceType Type)> vocabulary)
    {
        // Value types (GGUF): 4 uint32, 5 int32, 6 float32, 8 string, 9 array.
        static Action<BinaryWriter> U32(long v) => w => { w.Write(4u); w.Write(checked((uint)v)); };
        static Action<BinaryWriter> F32(double v) => w => { w.Write(6u); w.Write((float)v); };
        static Action<BinaryWriter> Str(string v) => w => { w.Write(8u); WriteString(w, v); };
        uint fileType = weightType switch { GgmlType.Q8_0 => 7, GgmlType.Q4_0 => 2, _ => 0 }; // llama_ftype: ALL_F32, MOSTLY_Q4_0, MOSTLY_Q8_0
        int rotaryDim = (int)Math.Round(c.HeadDim * c.PartialRotaryFactor);
        return
        [
            ("general.architecture", Str("llama")),
            ("general.name", Str("onnxdecoder-bench")),
            ("general.alignment", U32(Alignment)),
            ("general.file_type", U32(fileType)),
            ("llama.context_length", U32(c.MaxPositions)),
            ("llama.embedding_length", U32(c.HiddenSize)),
            ("llama.block_count", U32(c.NumLayers)),
            ("llama.feed_forward_length", U32(c.IntermediateSize)),
            ("llama.rope.dimension_count", U32(rotaryDim)),
            ("llama.attention.head_count", U32(c.NumHeads)),
            ("llama.attention.head_count_kv", U32(c.NumKvHeads)),
            ("llama.attention.layer_norm_rms_epsilon", F32(c.NormEps)),
            ("llama.rope.freq_base", F32(c.RopeTheta)),
            ("llama.vocab_size", U32(c.VocabSize)),
            ("tokenizer.ggml.model", Str("llama")),
            ("tokenizer.ggml.tokens", w =>
            {
                w.Write(9u); w.Write(8u); w.Write((ulong)vocabulary.Count);
                foreach (var p in vocabulary) WriteString(w, p.Piece);
            }),
            ("tokenizer.ggml.scores", w =>
            {
                w.Write(9u); w.Write(6u); w.Write((ulong)vocabulary.Count);
                foreach (var p in vocabulary) w.Write(p.Score);
            }),
            ("tokenizer.ggml.token_type", w =>
            {
                w.Write(9u); w.Write(5u); w.Write((ulong)vocabulary.Count);
                foreach (var p in vocabulary) w.Write((int)p.Type);
            }),
            ("tokenizer.ggml.unknown_token_id", U32(0)),
            ("tokenizer.ggml.bos_token_id", U32(c.BosTokenId)),
            ("tokenizer.ggml.eos_token_id", U32(c.EosTokenIds.Count > 0 ? c.EosTokenIds[0] : 2)),
        ];
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static long Align(long x) => (x + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w, long origin = 0)
    {
        long position = w.BaseStream.Position - origin;
        for (long i = position; i < Align(position); i++) w.Write((byte)0);
    }

    private static long ByteLength(GgmlType type, long[] shape)
    {
        var (elements, bytes) = GgufFile.BlockSize(type);
        return checked(shape.Aggregate(1L, (a, b) => a * b) / elements * bytes);
    }

    /// <summary>[heads*head_dim, in] rows from half-split pairs (i, i + head_dim/2) to interleaved pairs (2i, 2i + 1), per head.</summary>
    private static float[] ToInterleaved(float[] values, long[] shape, int headDim)
    {
        int rows = (int)shape[0], cols = (int)shape[1], half = headDim / 2;
        var result = new float[values.Length];
        for (int row = 0; row < rows; row++)
        {
            int head = row / headDim, j = row % headDim;
            int source = head * headDim + (j % 2 == 0 ? j / 2 : half + j / 2);
            Array.Copy(values, (long)source * cols, result, (long)row * cols, cols);
        }
        return result;
    }

    private static float[] Floats(ITensorSource source)
    {
        if (source.ElementType != ElementType.Float) throw new ArgumentException($"tensor of {source.ElementType}: the GGUF writer reads float32 checkpoints");
        var values = new float[checked((int)(source.ByteLength / 4))];
        using var stream = new MemoryStream(checked((int)source.ByteLength));
        source.WriteTo(stream);
        stream.GetBuffer().AsSpan(0, (int)stream.Length).CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    private static void WriteTensor(BinaryWriter w, GgmlType type, float[] values, long[] shape)
    {
        switch (type)
        {
            case GgmlType.F32:
                w.Write(MemoryMarshal.AsBytes(values.AsSpan()));
                return;
            case GgmlType.F16:
                foreach (float v in values) w.Write(BitConverter.HalfToUInt16Bits((Half)v));
                return;
        }
        var block = new byte[GgufFile.BlockSize(type).Bytes];
        for (long start = 0; start < values.Length; start += 32)
        {
            if (type == GgmlType.Q8_0) QuantizeQ8_0(values.AsSpan((int)start, 32), block);
            else QuantizeQ4_0(values.AsSpan((int)start, 32), block);
            w.Write(block);
        }
    }

    /// <summary>Q8_0 { f16 d; int8 q[32]; }: d = max|x| / 127, q = round(x / d).</summary>
    public static void QuantizeQ8_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        foreach (float v in x) amax = Math.Max(amax, Math.Abs(v));
        float d = amax / 127, id = d != 0 ? 1 / d : 0;
        BinaryPrimitives.WriteUInt16LittleEndian(block, BitConverter.HalfToUInt16Bits((Half)d));
        for (int i = 0; i < 32; i++) block[2 + i] = (byte)(sbyte)MathF.Round(x[i] * id, MidpointRounding.AwayFromZero);
    }

    /// <summary>
    /// Q4_0 { f16 d; u8 qs[16]; }: d = m / -8 with m the element of largest magnitude (sign kept), so m
    /// maps exactly to -8; q = clamp(floor(x / d + 8.5), 0, 15); element j in the low nibble of byte j,
    /// element j + 16 in its high nibble.
    /// </summary>
    public static void QuantizeQ4_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
            if (Math.Abs(v) > amax) { amax = Math.Abs(v); max = v; }
        float d = max / -8, id = d != 0 ? 1 / d : 0;
        BinaryPrimitives.WriteUInt16LittleEndian(block, BitConverter.HalfToUInt16Bits((Half)d));
        for (int j = 0; j < 16; j++)
        {
            int low = Math.Min(15, (int)(x[j] * id + 8.5f)), high = Math.Min(15, (int)(x[j + 16] * id + 8.5f));
            block[2 + j] = (byte)(low | high << 4);
        }
    }
}
