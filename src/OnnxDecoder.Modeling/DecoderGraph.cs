using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling;

/// <summary>
/// What every component of one decoder graph shares: the builder, the config, the lowering, the
/// weights, the graph inputs, and values computed once per graph (the attention mask bias, the
/// gathered rotary tables, GQA's sequence lengths).
/// </summary>
public sealed class DecoderGraph
{
    private readonly Dictionary<string, Value> _weights = new(StringComparer.Ordinal);
    private readonly Dictionary<string, object> _shared = new(StringComparer.Ordinal);

    public DecoderGraph(GraphBuilder builder, DecoderConfig config, ExportOptions options, IWeightSource weights)
    {
        B = builder;
        Config = config;
        Options = options;
        Weights = weights;
        MaxLength = options.MaxLength ?? config.MaxPositions;
        if (MaxLength <= 0) throw new ArgumentOutOfRangeException(nameof(options), MaxLength, "max length must be positive");
    }

    public GraphBuilder B { get; }
    public DecoderConfig Config { get; }
    public ExportOptions Options { get; }
    public IWeightSource Weights { get; }
    public bool Ort => Options.Lowering == Lowering.Ort;
    public int MaxLength { get; }
    /// <summary>The element type of activations, weights, KV cache and logits: float32, or float16.</summary>
    public ElementType Float => Options.Float16 ? ElementType.Float16 : ElementType.Float;
    public bool Float16 => Options.Float16;

    /// <summary>A float32 scalar in the activation type.</summary>
    public Value Scalar(float value) => B.Scalar(value, Float);

    /// <summary>x cast to float32 (norms and softmax accumulate there) when activations are float16.</summary>
    public Value ToFloat32(Value x) => Float16 ? B.Op("Cast", [x], Attr.Int("to", (int)ElementType.Float)) : x;

    /// <summary>A float32 x back in the activation type.</summary>
    public Value FromFloat32(Value x) => Float16 ? B.Op("Cast", [x], Attr.Int("to", (int)ElementType.Float16)) : x;

    /// <summary>A checkpoint tensor in the activation type (float weights become float16 with --precision fp16).</summary>
    private ITensorSource InActivationType(ITensorSource source, string name) =>
        Float16 && source.ElementType == ElementType.Float ? TensorTransforms.ToFloat16(source, name) : source;

    /// <summary>input_ids [batch_size, sequence_length] int64.</summary>
    public Value InputIds { get; internal set; } = null!;
    /// <summary>attention_mask [batch_size, total_sequence_length] int64, 1 for real tokens.</summary>
    public Value AttentionMask { get; internal set; } = null!;
    /// <summary>position_ids [batch_size, sequence_length] int64.</summary>
    public Value PositionIds { get; internal set; } = null!;

    /// <summary>A weight as stored in the checkpoint (norm scales, biases, embeddings).</summary>
    public Value Weight(string name)
    {
        if (!_weights.TryGetValue(name, out var value))
            _weights[name] = value = B.Initializer(name, InActivationType(Weights.Get(name), name));
        return value;
    }

    /// <summary>A PyTorch Linear weight [out, in], stored transposed as [in, out] for MatMul.</summary>
    public Value LinearWeight(string name)
    {
        if (!_weights.TryGetValue(name, out var value))
            _weights[name] = value = B.Initializer(name, InActivationType(TensorTransforms.Transpose2D(Weights.Get(name)), name));
        return value;
    }

    /// <summary>A weight derived from checkpoint tensors (stacked experts, fused projections).</summary>
    public Value DerivedWeight(string name, Func<ITensorSource> make)
    {
        if (!_weights.TryGetValue(name, out var value))
            _weights[name] = value = B.Initializer(name, InActivationType(make(), name));
        return value;
    }

    /// <summary>Something computed once per graph and shared by every layer (masks, rotary tables).</summary>
    public T Shared<T>(string key, Func<T> make) where T : notnull
    {
        if (!_shared.TryGetValue(key, out var value)) _shared[key] = value = make();
        return (T)value;
    }

    /// <summary>x @ W (+ b): a PyTorch Linear, named by the scope the caller opened.</summary>
    public Value Linear(Value x, string weightName, string? biasName = null)
    {
        var y = Project(x, weightName);
        return biasName is null ? y : B.Op("Add", [y, Weight(biasName)]);
    }

    public bool Quantized => Options.Quantization is not null;

    /// <summary>
    /// x [.., K] times a weight: a PyTorch Linear [N, K], or a GPT-2 Conv1D [K, N] when
    /// <paramref name="storedInOut"/>. Float32 weights go through MatMul; quantized ones through
    /// MatMulNBits (ort lowering) or DequantizeLinear + MatMul (portable int8, per output channel).
    /// </summary>
    public Value Project(Value x, string weightName, bool storedInOut = false)
    {
        if (Options.Quantization is not { } q)
            return B.Op("MatMul", [x, storedInOut ? Weight(weightName) : LinearWeight(weightName)]);
        var parts = Shared($"quantized:{weightName}", () => QuantizedInitializers(weightName, storedInOut, q));
        if (Ort)
        {
            var attributes = new List<Attr> { Attr.Int("K", parts.K), Attr.Int("N", parts.N), Attr.Int("bits", q.Bits), Attr.Int("block_size", q.BlockSize) };
            if (q.AccuracyLevel > 0) attributes.Add(Attr.Int("accuracy_level", q.AccuracyLevel));
            return B.MsOp("MatMulNBits", [x, parts.Packed, parts.Scales, parts.ZeroPoints], [.. attributes]);
        }
        if (q.Bits == 4)
        {
            //   q [K, N] uint4 --DequantizeLinear(axis 0, block_size, opset 21)--> [K, N] (activation type) --MatMul
            // The weight feeds MatMul's B directly, the form ONNX Runtime's CPU fuses back into MatMulNBits.
            return B.Op("MatMul", [x, B.Op("DequantizeLinear", [parts.Packed, parts.Scales, parts.ZeroPoints], Attr.Int("axis", 0), Attr.Int("block_size", q.BlockSize))]);
        }
        //   q [N, K] int8 --DequantizeLinear(axis 0, per row)--> [N, K] float32 (opset 17) --Transpose--> [K, N] (--Cast fp16) --MatMul
        var weight = B.Op("DequantizeLinear", [parts.Packed, parts.Scales, parts.ZeroPoints], Attr.Int("axis", 0));
        return B.Op("MatMul", [x, FromFloat32(B.Op("Transpose", [weight], Attr.Ints("perm", 1, 0)))]);
    }

    private sealed record QuantizedParts(Value Packed, Value Scales, Value? ZeroPoints, int N, int K, Value? GatherZeroPoints = null);

    /// <summary>
    /// Rows of a quantized table [N, K] picked by <paramref name="indices"/> [..] and dequantized:
    /// [.., K] float (ort lowering, GatherBlockQuantized). The table's quantized initializers are the
    /// ones MatMulNBits reads, so a tied embedding and LM head share one int4/int8 copy:
    ///   packed [N, blocks, blob] ─GatherBlockQuantized(quantize_axis 2)─ [.., blocks, block] ─Reshape─ [.., blocks*block] ─Slice─ [.., K]
    /// </summary>
    public Value GatherQuantized(string weightName, Value indices)
    {
        var q = Options.Quantization ?? throw new InvalidOperationException("GatherQuantized needs a quantized export");
        var parts = Shared($"quantized:{weightName}", () => QuantizedInitializers(weightName, false, q, gatherZeroPoints: !q.Symmetric));
        int blocks = (parts.K + q.BlockSize - 1) / q.BlockSize;
        // One block per (row, block) along the last axis: scales (and zero points) [N, blocks, 1].
        var scales = Shared($"gather_scales:{weightName}", () => B.Op("Reshape", [parts.Scales, B.Int64s(parts.N, blocks, 1)]));
        Value? zeros = q.Symmetric ? null : Shared($"gather_zero_points:{weightName}", () =>
            B.Op("Reshape", [parts.GatherZeroPoints ?? throw new InvalidOperationException($"'{weightName}' was quantized before its gather was known"), B.Int64s(parts.N, blocks, 1)]));
        var rows = B.MsOp("GatherBlockQuantized", [parts.Packed, indices, scales, zeros],
            Attr.Int("gather_axis", 0), Attr.Int("quantize_axis", 2), Attr.Int("block_size", q.BlockSize), Attr.Int("bits", q.Bits)); // [.., blocks, block]
        var flat = B.Op("Reshape", [rows, B.Int64s(0, 0, (long)blocks * q.BlockSize)]);                                         // [B, S, blocks*block]
        return (long)blocks * q.BlockSize == parts.K ? flat : B.Op("Slice", [flat, B.Int64s(0), B.Int64s(parts.K), B.Int64s(2)]); // [B, S, K]
    }

    private QuantizedParts QuantizedInitializers(string name, bool storedInOut, Quantization.QuantizationOptions q, bool gatherZeroPoints = false)
    {
        var source = Weights.Get(name);
        if (source.Shape.Count != 2) throw new ArgumentException($"weight '{name}' is [{string.Join(", ", source.Shape)}]; only 2-D weights are quantized");
        if (Ort)
        {
            // Stored blocks that MatMulNBits can take as they are (GGUF Q4_0, Q8_0) skip the float round trip.
            var lazy = !storedInOut && Weights is Quantization.IQuantizedWeightSource native && native.TryCarry(name, q) is { } carried
                ? new Quantization.LazyQuantized(carried)
                : new Quantization.LazyQuantized(source, storedInOut, q, (q.Symmetric ? 2 : 3) + (gatherZeroPoints ? 1 : 0));
            int blocks = (lazy.K + q.BlockSize - 1) / q.BlockSize, blob = q.BlockSize * q.Bits / 8;
            var packed = B.Initializer(name + ".quantized", lazy.Part(w => w.Packed, ElementType.UInt8, [lazy.N, blocks, blob]));
            // MatMulNBits (and GatherBlockQuantized) take scales in the activation type.
            var scales = B.Initializer(name + ".scales", lazy.Part(w => ScaleBytes(w.Scales), Float, [lazy.N * blocks]));
            Value? zeros = q.Symmetric ? null : B.Initializer(name + ".zero_points", lazy.Part(w => w.ZeroPoints!, ElementType.UInt8,
                [q.Bits == 8 ? lazy.N * blocks : lazy.N * ((blocks + 1) / 2)]));
            // GatherBlockQuantized reads one zero point per (row, block) byte; MatMulNBits packs two 4-bit ones a byte.
            Value? gatherZeros = q.Symmetric || !gatherZeroPoints ? null : B.Initializer(name + ".gather_zero_points", lazy.Part(w =>
                Enumerable.Range(0, w.N * w.Blocks).Select(i => (byte)w.ZeroPoint(i / w.Blocks, i % w.Blocks)).ToArray(), ElementType.UInt8, [lazy.N * blocks]));
            return new QuantizedParts(packed, scales, zeros, lazy.N, lazy.K, gatherZeros);
        }
        if (q.Bits == 4)
        {
            // Portable int4: the same blocks (along K) as MatMulNBits, laid out for DequantizeLinear-21 on
            // MatMul's B: values uint4 [K, N], scales and uint4 zero points [blocks, N] (a partial last block is allowed).
            var lazy = new Quantization.LazyQuantized(source, storedInOut, q, 3);
            int blocks = (lazy.K + q.BlockSize - 1) / q.BlockSize;
            static byte[] Nibbles(long count, Func<long, int> value)
            {
                var packed = new byte[(count + 1) / 2];
                for (long i = 0; i < count; i++) packed[i / 2] |= (byte)(value(i) << (int)(i % 2 * 4)); // low nibble first
                return packed;
            }
            var packed = B.Initializer(name + ".quantized", lazy.Part(w => Nibbles((long)w.K * w.N, i => w.Quant((int)(i % w.N), (int)(i / w.N))), ElementType.UInt4, [lazy.K, lazy.N]));
            var scales = B.Initializer(name + ".scales", lazy.Part(w =>
            {
                var byBlock = new float[w.Scales.Length];                                   // [N, blocks] -> [blocks, N]
                for (int n = 0; n < w.N; n++) for (int b = 0; b < w.Blocks; b++) byBlock[b * w.N + n] = w.Scales[n * w.Blocks + b];
                return ScaleBytes(byBlock);
            }, Float, [blocks, lazy.N]));
            var zeros = B.Initializer(name + ".zero_points", lazy.Part(w => Nibbles((long)w.Blocks * w.N, i => w.ZeroPoint((int)(i % w.N), (int)(i / w.N))), ElementType.UInt4, [blocks, lazy.N]));
            return new QuantizedParts(packed, scales, zeros, lazy.N, lazy.K);
        }
        // Portable int8: one block per output row (per-channel), uint8 with a zero point per row.
        var rows = new Quantization.LazyPerChannel(source, storedInOut, q.Symmetric);
        var values = B.Initializer(name + ".quantized", rows.Part(w => w.Values, ElementType.UInt8, [rows.N, rows.K]));
        var rowScales = B.Initializer(name + ".scales", rows.Part(w => System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.Scales.AsSpan()).ToArray(), ElementType.Float, [rows.N]));
        var rowZeros = B.Initializer(name + ".zero_points", rows.Part(w => w.ZeroPoints, ElementType.UInt8, [rows.N]));
        return new QuantizedParts(values, rowScales, rowZeros, rows.N, rows.K);
    }

    /// <summary>Quantization scales as stored: float32, or float16 with float16 activations.</summary>
    private byte[] ScaleBytes(float[] scales) => Float16
        ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(scales.Select(s => (Half)s).ToArray().AsSpan()).ToArray()
        : System.Runtime.InteropServices.MemoryMarshal.AsBytes(scales.AsSpan()).ToArray();

    /// <summary>ReduceMean/ReduceMax/... over <paramref name="axes"/>: an attribute up to opset 17, an
    /// input from opset 18 (the portable int4 graph is opset 21).</summary>
    public Value Reduce(string op, Value x, long[] axes, bool keepDims)
    {
        var keep = Attr.Int("keepdims", keepDims ? 1 : 0);
        bool axesAsInput = op == "ReduceSum" || B.DefaultOpset >= 18; // ReduceSum moved at opset 13
        return axesAsInput ? B.Op(op, [x, B.Int64s(axes)], keep) : B.Op(op, [x], Attr.Ints("axes", axes), keep);
    }

    /// <summary>Dimension <paramref name="axis"/> of x as a 1-D int64 tensor [1].</summary>
    public Value Dim(Value x, int axis) => B.Op("Shape", [x], Attr.Int("start", axis), Attr.Int("end", axis + 1));
}
