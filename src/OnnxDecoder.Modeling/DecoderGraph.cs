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
    public ElementType Float => ElementType.Float;

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
            _weights[name] = value = B.Initializer(name, Weights.Get(name));
        return value;
    }

    /// <summary>A PyTorch Linear weight [out, in], stored transposed as [in, out] for MatMul.</summary>
    public Value LinearWeight(string name)
    {
        if (!_weights.TryGetValue(name, out var value))
            _weights[name] = value = B.Initializer(name, TensorTransforms.Transpose2D(Weights.Get(name)));
        return value;
    }

    /// <summary>A weight derived from checkpoint tensors (stacked experts, fused projections).</summary>
    public Value DerivedWeight(string name, Func<ITensorSource> make)
    {
        if (!_weights.TryGetValue(name, out var value))
            _weights[name] = value = B.Initializer(name, make());
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
        var y = B.Op("MatMul", [x, LinearWeight(weightName)]);
        return biasName is null ? y : B.Op("Add", [y, Weight(biasName)]);
    }

    /// <summary>Dimension <paramref name="axis"/> of x as a 1-D int64 tensor [1].</summary>
    public Value Dim(Value x, int axis) => B.Op("Shape", [x], Attr.Int("start", axis), Attr.Int("end", axis + 1));
}
