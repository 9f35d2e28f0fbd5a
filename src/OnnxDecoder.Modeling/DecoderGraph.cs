using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Modeling.Lowerings;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling;

/// <summary>
/// What every component of one decoder graph shares: the builder, the config, the lowering that
/// decides how each block becomes ops, the weights, the graph inputs, and the values every layer
/// reads (attention masks, rotary tables, GQA's lengths), each built once on first use.
/// </summary>
public sealed class DecoderGraph
{
    private readonly Dictionary<string, Value> _weights = new(StringComparer.Ordinal);
    private AttentionMasks? _windowedMasks, _fullMasks;
    private (Value SeqlensK, Value TotalLength)? _gqaLengths;
    private Value? _gqaPaddingBias;
    private (Value Cos, Value Sin)? _rotaryCaches, _rotaryPerPosition, _localRotaryCaches, _localRotaryPerPosition;

    public DecoderGraph(GraphBuilder builder, DecoderConfig config, ExportOptions options, IWeightSource weights)
    {
        B = builder;
        Config = config;
        Options = options;
        FusedWeights = new FusedWeightSource(weights);
        Weights = FusedWeights;
        MaxLength = options.MaxLength ?? config.MaxPositions;
        if (MaxLength <= 0) throw new ArgumentOutOfRangeException(nameof(options), MaxLength, "max length must be positive");
        Lowering = GraphLowering.For(options.Lowering);
        Quantized = options.Quantization is { } q ? Lowering.QuantizedProjections(this, q) : null;
    }

    public GraphBuilder B { get; }
    public DecoderConfig Config { get; }
    public ExportOptions Options { get; }
    /// <summary>The checkpoint's weights, and the fused ones (<see cref="FusedProjections"/>) the graph defines.</summary>
    public IWeightSource Weights { get; }
    public FusedWeightSource FusedWeights { get; }
    /// <summary>Whether projections that read one input become one matmul (the ort lowering, where fewer, larger
    /// nodes cut ONNX Runtime's per-node dispatch); the portable graph keeps one per checkpoint tensor.</summary>
    public bool FusesProjections => Lowering.Kind == Modeling.Lowering.Ort;
    /// <summary>How blocks become ops: standard ops (portable) or ONNX Runtime's fused ones (ort).</summary>
    public GraphLowering Lowering { get; }
    /// <summary>The quantized weights and their projections; null for float exports.</summary>
    public QuantizedProjections? Quantized { get; }
    public int MaxLength { get; }
    /// <summary>The element type of activations, weights, KV cache and logits: float32, or float16.</summary>
    public ElementType Float => Options.Float16 ? ElementType.Float16 : ElementType.Float;
    public bool Float16 => Options.Float16;

    /// <summary>input_ids [batch_size, sequence_length] int64.</summary>
    public Value InputIds { get; internal set; } = null!;
    /// <summary>attention_mask [batch_size, total_sequence_length] int64, 1 for real tokens.</summary>
    public Value AttentionMask { get; internal set; } = null!;
    /// <summary>position_ids [batch_size, sequence_length] int64.</summary>
    public Value PositionIds { get; internal set; } = null!;
    /// <summary>Router logits of each mixture-of-experts layer, in layer order (optional outputs).</summary>
    public List<Value> RouterLogits { get; } = [];

    // ---- values every layer reads, built once in the scope of their first use --------------------

    /// <summary>The masks of layers with <paramref name="slidingWindow"/>: the config's window, or none.</summary>
    public AttentionMasks Masks(int? slidingWindow)
    {
        if (slidingWindow is null) return _fullMasks ??= new AttentionMasks(this, null);
        if (slidingWindow != Config.SlidingWindow)
            throw new ArgumentOutOfRangeException(nameof(slidingWindow), slidingWindow, $"layers slide over the config's window ({Config.SlidingWindow}) or none");
        return _windowedMasks ??= new AttentionMasks(this, slidingWindow);
    }

    /// <summary>The masks of the layers that use the config's sliding window (every layer, unless the family says which).</summary>
    public AttentionMasks DefaultMasks => Masks(Config.SlidingWindow);
    /// <summary>GroupQueryAttention's seqlens_k (int32 [B]) and total_sequence_length (int32 scalar).</summary>
    public (Value SeqlensK, Value TotalLength) GqaLengths => _gqaLengths ??= Components.AttentionMask.GqaLengths(this);
    /// <summary>GroupQueryAttention's attention_bias [B, 1, S, T]: left padding only (GQA masks causality and windows itself).</summary>
    public Value GqaPaddingBias => _gqaPaddingBias ??= Components.AttentionMask.GqaPaddingBias(this);
    /// <summary>Rotary cos/sin caches [max_length, rot/2] (static scalings).</summary>
    public (Value Cos, Value Sin) RotaryCaches => _rotaryCaches ??= Rotary.Caches(this);
    /// <summary>Rotary cos/sin of each position of the call [B, S, 1, rot/2].</summary>
    public (Value Cos, Value Sin) RotaryPerPosition => _rotaryPerPosition ??= Rotary.PerPosition(this);
    /// <summary>The local rotary's cos/sin caches [max_length, rot/2] (sliding layers with <see cref="DecoderConfig.LocalRopeTheta"/>).</summary>
    public (Value Cos, Value Sin) LocalRotaryCaches => _localRotaryCaches ??= Rotary.LocalCaches(this);
    /// <summary>The local rotary's cos/sin of each position of the call [B, S, 1, rot/2].</summary>
    public (Value Cos, Value Sin) LocalRotaryPerPosition => _localRotaryPerPosition ??= Rotary.PerPosition(this, local: true);

    // ---- helpers -------------------------------------------------------------------------------

    /// <summary>A float32 scalar in the activation type.</summary>
    public Value Scalar(float value) => B.Scalar(value, Float);

    /// <summary>x cast to float32 (norms and softmax accumulate there) when activations are float16.</summary>
    public Value ToFloat32(Value x) => Float16 ? B.Op("Cast", [x], Attr.Int("to", (int)ElementType.Float)) : x;

    /// <summary>A float32 x back in the activation type.</summary>
    public Value FromFloat32(Value x) => Float16 ? B.Op("Cast", [x], Attr.Int("to", (int)ElementType.Float16)) : x;

    /// <summary>A checkpoint tensor in the activation type (float weights become float16 with --precision fp16).</summary>
    private ITensorSource InActivationType(ITensorSource source, string name) =>
        Float16 && source.ElementType == ElementType.Float ? TensorTransforms.ToFloat16(source, name) : source;

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

    /// <summary>x @ W (+ b): a PyTorch Linear, named by the scope the caller opened.</summary>
    public Value Linear(Value x, string weightName, string? biasName = null)
    {
        var y = Project(x, weightName);
        return biasName is null ? y : B.Op("Add", [y, Weight(biasName)]);
    }

    /// <summary>
    /// x [.., K] times a weight: a PyTorch Linear [N, K], or a GPT-2 Conv1D [K, N] when
    /// <paramref name="storedInOut"/>. Float weights go through MatMul; quantized ones through the
    /// lowering's quantized projection.
    /// </summary>
    public Value Project(Value x, string weightName, bool storedInOut = false) => Quantized is { } quantized
        ? quantized.Project(x, weightName, storedInOut)
        : B.Op("MatMul", [x, storedInOut ? Weight(weightName) : LinearWeight(weightName)]);

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
