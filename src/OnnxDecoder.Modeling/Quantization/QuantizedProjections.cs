using System.Runtime.InteropServices;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Quantization;

/// <summary>
/// Quantized weights of one graph and the projections that read them. Each weight's initializers
/// are made once (on first use) and shared by every reader, so a tied embedding and LM head use one
/// copy. The layout belongs to the lowering: <see cref="MatMulNBitsProjections"/> (ort) or
/// <see cref="DequantizeLinearProjections"/> (portable).
/// </summary>
public abstract class QuantizedProjections(DecoderGraph g, QuantizationOptions options)
{
    private readonly Dictionary<string, QuantizedParts?> _parts = new(StringComparer.Ordinal);
    private readonly HashSet<string> _floatTables = new(StringComparer.Ordinal);

    protected DecoderGraph G { get; } = g;
    protected QuantizationOptions Options { get; } = options;

    /// <summary>Weights left float because their input width is not a whole number of blocks (name, [N, K]), in the order met.</summary>
    public List<(string Name, long N, long K)> FloatWeights { get; } = [];

    /// <summary>A weight's quantized initializers: values, scales, zero points (null when symmetric), its [N, K], and the
    /// options it was quantized with (the block size may be smaller than asked: <see cref="QuantizationOptions.ForWidth"/>).</summary>
    protected sealed record QuantizedParts(Value Packed, Value Scales, Value? ZeroPoints, int N, int K, QuantizationOptions Options, Value? GatherZeroPoints = null);

    /// <summary>The quantized parts, or null where the weight stays float.</summary>
    protected QuantizedParts? Parts(string name, bool storedInOut, bool gatherZeroPoints = false)
    {
        if (!_parts.TryGetValue(name, out var parts))
        {
            var source = G.Weights.Get(name);
            if (source.Shape.Count != 2) throw new ArgumentException($"weight '{name}' is [{string.Join(", ", source.Shape)}]; only 2-D weights are quantized");
            long n = storedInOut ? source.Shape[1] : source.Shape[0], k = storedInOut ? source.Shape[0] : source.Shape[1];
            var options = Quantizes(k);
            if (options is null) FloatWeights.Add((name, n, k));
            _parts[name] = parts = options is null ? null : Make(name, source, storedInOut, gatherZeroPoints, options);
        }
        return parts;
    }

    /// <summary>The options a weight of input width k is quantized with, or null to keep it float.</summary>
    protected virtual QuantizationOptions? Quantizes(long k) => Options.ForWidth(k);

    protected abstract QuantizedParts Make(string name, ITensorSource source, bool storedInOut, bool gatherZeroPoints, QuantizationOptions options);

    /// <summary>x [.., K] times the quantized weight: a PyTorch Linear [N, K], or a Conv1D [K, N] when <paramref name="storedInOut"/>.
    /// A weight that stays float goes through MatMul in the activation type (a table also gathered float is transposed, not copied).</summary>
    public Value Project(Value x, string weightName, bool storedInOut)
    {
        if (Parts(weightName, storedInOut) is { } parts) return ProjectQuantized(x, parts);
        var b = G.B;
        return b.Op("MatMul", [x, storedInOut ? G.Weight(weightName)
            : _floatTables.Contains(weightName) ? b.Op("Transpose", [G.Weight(weightName)], Attr.Ints("perm", 1, 0)) : G.LinearWeight(weightName)]);
    }

    protected abstract Value ProjectQuantized(Value x, QuantizedParts parts);

    /// <summary>Rows [.., K] of the quantized table picked by indices, or null where the lowering gathers float rows.</summary>
    public Value? GatherRows(string weightName, Value indices)
    {
        var rows = GatherQuantized(weightName, indices);
        if (rows is null) _floatTables.Add(weightName);
        return rows;
    }

    protected virtual Value? GatherQuantized(string weightName, Value indices) => null;

    /// <summary>Quantization scales as stored: float32, or float16 with float16 activations.</summary>
    protected byte[] ScaleBytes(float[] scales) => G.Float16
        ? MemoryMarshal.AsBytes(scales.Select(s => (Half)s).ToArray().AsSpan()).ToArray()
        : MemoryMarshal.AsBytes(scales.AsSpan()).ToArray();
}

/// <summary>The ort lowering: com.microsoft MatMulNBits over [N, blocks, blob] blocks, and GatherBlockQuantized for embeddings.</summary>
public sealed class MatMulNBitsProjections(DecoderGraph g, QuantizationOptions options) : QuantizedProjections(g, options)
{
    // Per-column int8 (DynamicQuantizeMatMul) has no blocks to fit: every width is quantized.
    protected override QuantizationOptions? Quantizes(long k) => Options.DynamicQuantizeMatMul ? Options : Options.ForWidth(k);

    protected override Value ProjectQuantized(Value x, QuantizedParts parts)
    {
        var q = parts.Options;
        // x [.., K] float32, quantized to uint8 per call -> integer matmul with int8 W^T [K, N] -> scaled [.., N].
        if (q.DynamicQuantizeMatMul) return G.B.MsOp("DynamicQuantizeMatMul", [x, parts.Packed, parts.Scales, parts.ZeroPoints]);
        var attributes = new List<Attr> { Attr.Int("K", parts.K), Attr.Int("N", parts.N), Attr.Int("bits", q.Bits), Attr.Int("block_size", q.BlockSize) };
        if (q.AccuracyLevel > 0) attributes.Add(Attr.Int("accuracy_level", q.AccuracyLevel));
        return G.B.MsOp("MatMulNBits", [x, parts.Packed, parts.Scales, parts.ZeroPoints], [.. attributes]);
    }

    /// <summary>
    /// Rows of a quantized table [N, K] picked by <paramref name="indices"/> [..] and dequantized:
    /// [.., K] float (GatherBlockQuantized). The table's quantized initializers are the ones
    /// MatMulNBits reads, so a tied embedding and LM head share one int4/int8 copy:
    ///   packed [N, blocks, blob] ─GatherBlockQuantized(quantize_axis 2)─ [.., blocks, block] ─Reshape─ [.., blocks*block] ─Slice─ [.., K]
    /// </summary>
    protected override Value? GatherQuantized(string weightName, Value indices)
    {
        var b = G.B;
        if (Options.DynamicQuantizeMatMul) return null; // the table stays float; its per-column copy serves a tied head
        if (Parts(weightName, false, gatherZeroPoints: !Options.Symmetric) is not { } parts) return null;
        var q = parts.Options;
        int blocks = (parts.K + q.BlockSize - 1) / q.BlockSize;
        // One block per (row, block) along the last axis: scales (and zero points) [N, blocks, 1].
        var scales = b.Op("Reshape", [parts.Scales, b.Int64s(parts.N, blocks, 1)]);
        Value? zeros = q.Symmetric ? null : b.Op("Reshape", [parts.GatherZeroPoints
            ?? throw new InvalidOperationException($"'{weightName}' was quantized before its gather was known"), b.Int64s(parts.N, blocks, 1)]);
        var rows = b.MsOp("GatherBlockQuantized", [parts.Packed, indices, scales, zeros],
            Attr.Int("gather_axis", 0), Attr.Int("quantize_axis", 2), Attr.Int("block_size", q.BlockSize), Attr.Int("bits", q.Bits)); // [.., blocks, block]
        var flat = b.Op("Reshape", [rows, b.Int64s(0, 0, (long)blocks * q.BlockSize)]);                                         // [B, S, blocks*block]
        return (long)blocks * q.BlockSize == parts.K ? flat : b.Op("Slice", [flat, b.Int64s(0), b.Int64s(parts.K), b.Int64s(2)]); // [B, S, K]
    }

    protected override QuantizedParts Make(string name, ITensorSource source, bool storedInOut, bool gatherZeroPoints, QuantizationOptions q)
    {
        var b = G.B;
        if (q.DynamicQuantizeMatMul)
        {
            if (G.Float16) throw new NotSupportedException("DynamicQuantizeMatMul takes float32 activations: export int8 per-column weights without fp16 activations");
            // W [N, K] -> B int8 [K, N], one symmetric scale per column of B (per output), zero point 0 (omitted).
            var rows = new LazyPerChannel(source, storedInOut, symmetric: true, q.SearchScales, parts: 2);
            var weight = b.Initializer(name + ".quantized", rows.Part(w =>
            {
                var transposed = new byte[(long)w.N * w.K];
                for (int n = 0; n < w.N; n++)
                    for (int k = 0; k < w.K; k++) transposed[(long)k * w.N + n] = (byte)(sbyte)(w.Values[(long)n * w.K + k] - w.ZeroPoints[n]);
                return transposed;
            }, ElementType.Int8, [rows.K, rows.N]));
            var columnScales = b.Initializer(name + ".scales", rows.Part(w => MemoryMarshal.AsBytes(w.Scales.AsSpan()).ToArray(), ElementType.Float, [rows.N]));
            return new QuantizedParts(weight, columnScales, null, rows.N, rows.K, q);
        }
        // Stored blocks that MatMulNBits can take as they are (GGUF Q4_0, Q8_0) skip the float round trip.
        var lazy = !storedInOut && G.Weights is IQuantizedWeightSource native && native.TryCarry(name, q) is { } carried
            ? new LazyQuantized(carried)
            : new LazyQuantized(source, storedInOut, q, (q.Symmetric ? 2 : 3) + (gatherZeroPoints ? 1 : 0));
        int blocks = (lazy.K + q.BlockSize - 1) / q.BlockSize, blob = q.BlockSize * q.Bits / 8;
        var packed = b.Initializer(name + ".quantized", lazy.Part(w => w.Packed, ElementType.UInt8, [lazy.N, blocks, blob]));
        // MatMulNBits (and GatherBlockQuantized) take scales in the activation type.
        var scales = b.Initializer(name + ".scales", lazy.Part(w => ScaleBytes(w.Scales), G.Float, [lazy.N * blocks]));
        Value? zeros = q.Symmetric ? null : b.Initializer(name + ".zero_points", lazy.Part(w => w.ZeroPoints!, ElementType.UInt8,
            [q.Bits == 8 ? lazy.N * blocks : lazy.N * ((blocks + 1) / 2)]));
        // GatherBlockQuantized reads one zero point per (row, block) byte; MatMulNBits packs two 4-bit ones a byte.
        Value? gatherZeros = q.Symmetric || !gatherZeroPoints ? null : b.Initializer(name + ".gather_zero_points", lazy.Part(w =>
            Enumerable.Range(0, w.N * w.Blocks).Select(i => (byte)w.ZeroPoint(i / w.Blocks, i % w.Blocks)).ToArray(), ElementType.UInt8, [lazy.N * blocks]));
        return new QuantizedParts(packed, scales, zeros, lazy.N, lazy.K, q, gatherZeros);
    }
}

/// <summary>The portable lowering: DequantizeLinear feeding MatMul (int8 per output row at opset 17; int4 blocks at opset 21).</summary>
public sealed class DequantizeLinearProjections(DecoderGraph g, QuantizationOptions options) : QuantizedProjections(g, options)
{
    // Per-row int8 has no blocks to fit: every width is quantized.
    protected override QuantizationOptions? Quantizes(long k) => Options.Bits == 8 ? Options : Options.ForWidth(k);

    protected override Value ProjectQuantized(Value x, QuantizedParts parts)
    {
        var b = G.B;
        if (parts.Options.Bits == 4)
        {
            //   q [K, N] uint4 --DequantizeLinear(axis 0, block_size, opset 21)--> [K, N] (activation type) --MatMul
            // The weight feeds MatMul's B directly, the form ONNX Runtime's CPU fuses back into MatMulNBits.
            return b.Op("MatMul", [x, b.Op("DequantizeLinear", [parts.Packed, parts.Scales, parts.ZeroPoints], Attr.Int("axis", 0), Attr.Int("block_size", parts.Options.BlockSize))]);
        }
        //   q [N, K] int8 --DequantizeLinear(axis 0, per row)--> [N, K] float32 (opset 17) --Transpose--> [K, N] (--Cast fp16) --MatMul
        var weight = b.Op("DequantizeLinear", [parts.Packed, parts.Scales, parts.ZeroPoints], Attr.Int("axis", 0));
        return b.Op("MatMul", [x, G.FromFloat32(b.Op("Transpose", [weight], Attr.Ints("perm", 1, 0)))]);
    }

    protected override QuantizedParts Make(string name, ITensorSource source, bool storedInOut, bool gatherZeroPoints, QuantizationOptions q)
    {
        var b = G.B;
        if (q.Bits == 4)
        {
            // Portable int4: the same blocks (along K) as MatMulNBits, laid out for DequantizeLinear-21 on
            // MatMul's B: values uint4 [K, N], scales and uint4 zero points [blocks, N] (a partial last block is allowed).
            var lazy = new LazyQuantized(source, storedInOut, q, 3);
            int blocks = (lazy.K + q.BlockSize - 1) / q.BlockSize;
            static byte[] Nibbles(long count, Func<long, int> value)
            {
                var packed = new byte[(count + 1) / 2];
                for (long i = 0; i < count; i++) packed[i / 2] |= (byte)(value(i) << (int)(i % 2 * 4)); // low nibble first
                return packed;
            }
            var packed = b.Initializer(name + ".quantized", lazy.Part(w => Nibbles((long)w.K * w.N, i => w.Quant((int)(i % w.N), (int)(i / w.N))), ElementType.UInt4, [lazy.K, lazy.N]));
            var scales = b.Initializer(name + ".scales", lazy.Part(w =>
            {
                var byBlock = new float[w.Scales.Length];                                   // [N, blocks] -> [blocks, N]
                for (int n = 0; n < w.N; n++) for (int k = 0; k < w.Blocks; k++) byBlock[k * w.N + n] = w.Scales[n * w.Blocks + k];
                return ScaleBytes(byBlock);
            }, G.Float, [blocks, lazy.N]));
            var zeros = b.Initializer(name + ".zero_points", lazy.Part(w => Nibbles((long)w.Blocks * w.N, i => w.ZeroPoint((int)(i % w.N), (int)(i / w.N))), ElementType.UInt4, [blocks, lazy.N]));
            return new QuantizedParts(packed, scales, zeros, lazy.N, lazy.K, q);
        }
        // Portable int8: one block per output row (per-channel), uint8 with a zero point per row.
        var rows = new LazyPerChannel(source, storedInOut, q.Symmetric, q.SearchScales);
        var values = b.Initializer(name + ".quantized", rows.Part(w => w.Values, ElementType.UInt8, [rows.N, rows.K]));
        var rowScales = b.Initializer(name + ".scales", rows.Part(w => MemoryMarshal.AsBytes(w.Scales.AsSpan()).ToArray(), ElementType.Float, [rows.N]));
        var rowZeros = b.Initializer(name + ".zero_points", rows.Part(w => w.ZeroPoints, ElementType.UInt8, [rows.N]));
        return new QuantizedParts(values, rowScales, rowZeros, rows.N, rows.K, q);
    }
}
