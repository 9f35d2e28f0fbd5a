using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace OnnxDecoder.Onnx;

/// <summary>
/// Records an ONNX graph as it is described: every call returns the value it produces, node names
/// follow the scope stack (<c>/model/layers.0/attn/q_proj/MatMul</c>), outputs are named
/// <c>{node}/output_{k}</c>, small constants are shared, and the opset imports are collected from the
/// domains the nodes use. <see cref="Build"/> freezes the recording into an <see cref="OnnxModel"/>.
/// </summary>
public sealed class GraphBuilder
{
    public const string DefaultDomain = "";
    public const string MicrosoftDomain = "com.microsoft";

    private readonly List<Value> _inputs = [];
    private readonly List<GraphOutput> _outputs = [];
    private readonly List<RecordedNode> _nodes = [];
    private readonly List<(Value Value, ITensorSource Source)> _initializers = [];
    private readonly Dictionary<string, Value> _constants = new(StringComparer.Ordinal);
    private readonly HashSet<string> _valueNames = new(StringComparer.Ordinal);
    private readonly HashSet<string> _nodeNames = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _nodeNameCounts = new(StringComparer.Ordinal);
    private readonly List<string> _scopes = [];
    private readonly Dictionary<string, long> _opsetVersions = new(StringComparer.Ordinal);
    private readonly List<KeyValuePair<string, string>> _metadata = [];
    private bool _built;

    /// <param name="graphName">The graph's name in the file.</param>
    /// <param name="defaultOpset">Opset of the ai.onnx domain (17 for portable float graphs).</param>
    public GraphBuilder(string graphName = "main_graph", int defaultOpset = 17)
    {
        if (defaultOpset < 7) throw new ArgumentOutOfRangeException(nameof(defaultOpset), defaultOpset, "opsets below 7 are not supported");
        GraphName = graphName;
        _opsetVersions[DefaultDomain] = defaultOpset;
        _opsetVersions[MicrosoftDomain] = 1;
    }

    public string GraphName { get; }
    public int DefaultOpset => (int)_opsetVersions[DefaultDomain];

    /// <summary>Sets the version imported for <paramref name="domain"/> if the graph uses it.</summary>
    public void UseOpset(string domain, long version) => _opsetVersions[domain] = version;

    // ---- scopes -------------------------------------------------------------------------------

    /// <summary>Opens a naming scope; nodes created inside are named <c>/outer/inner/OpType</c>.</summary>
    public IDisposable Scope(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('/')) throw new ArgumentException($"scope name '{name}' must be non-empty and contain no '/'", nameof(name));
        _scopes.Add(name);
        int depth = _scopes.Count;
        return new ScopeHandle(this, depth);
    }

    /// <summary>The current scope path, e.g. <c>/model/layers.0/attn</c> ("" at the top).</summary>
    public string CurrentScope => _scopes.Count == 0 ? "" : "/" + string.Join('/', _scopes);

    private sealed class ScopeHandle(GraphBuilder owner, int depth) : IDisposable
    {
        private bool _closed;
        public void Dispose()
        {
            if (_closed) return;
            if (owner._scopes.Count != depth) throw new InvalidOperationException("scopes must be closed in the reverse order of opening");
            owner._scopes.RemoveAt(depth - 1);
            _closed = true;
        }
    }

    // ---- graph inputs, initializers and constants ---------------------------------------------

    /// <summary>Declares a graph input, e.g. <c>Input("input_ids", Int64, "batch_size", "sequence_length")</c>.</summary>
    public Value Input(string name, ElementType type, params Dim[] shape)
    {
        EnsureOpen();
        var value = new Value(ClaimValueName(name), type, shape.ToArray(), ValueKind.GraphInput);
        _inputs.Add(value);
        return value;
    }

    /// <summary>Adds a named initializer (a weight). The bytes are read only when the model is saved.</summary>
    public Value Initializer(string name, ITensorSource source)
    {
        EnsureOpen();
        var shape = source.Shape.Select(d => Dim.Of(d)).ToArray();
        var value = new Value(ClaimValueName(name), source.ElementType, shape, ValueKind.Initializer);
        _initializers.Add((value, source));
        return value;
    }

    /// <summary>A shared constant tensor: the same type, shape and values give the same value.</summary>
    public Value Constant<T>(ReadOnlySpan<T> values, params long[] shape) where T : unmanaged
    {
        EnsureOpen();
        var type = TensorData.TypeOf<T>();
        byte[] bytes = MemoryMarshal.AsBytes(values).ToArray();
        string key = $"{type}|{string.Join(',', shape)}|{Convert.ToHexString(bytes)}";
        if (_constants.TryGetValue(key, out var existing)) return existing;

        string valuesTag = values.Length <= 8
            ? string.Join('_', ToInvariantStrings(values))
            : "sha256_" + Convert.ToHexString(SHA256.HashData(bytes), 0, 8).ToLowerInvariant();
        string name = $"/model/constants/{type.ToString().ToUpperInvariant()}/{shape.Length}D/{valuesTag}";
        var value = Initializer(name, TensorData.FromBytes(type, bytes, shape));
        _constants[key] = value;
        return value;
    }

    /// <summary>A shared 1-D int64 constant, the usual form of shapes, axes and indices.</summary>
    public Value Int64s(params long[] values) => Constant<long>(values, values.Length);

    /// <summary>A shared int64 scalar.</summary>
    public Value Int64Scalar(long value) => Constant<long>([value]);

    /// <summary>A shared float32 scalar.</summary>
    public Value FloatScalar(float value) => Constant<float>([value]);

    /// <summary>A shared scalar of the given float type (float32, float16).</summary>
    public Value Scalar(float value, ElementType type) => type switch
    {
        ElementType.Float => FloatScalar(value),
        ElementType.Float16 => Constant<Half>([(Half)value]),
        _ => throw new NotSupportedException($"no scalar constant for element type {type}"),
    };

    private static IEnumerable<string> ToInvariantStrings<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var list = new List<string>(values.Length);
        foreach (var v in values) list.Add(Convert.ToString(v, CultureInfo.InvariantCulture)!.Replace('/', '_'));
        return list;
    }

    // ---- nodes --------------------------------------------------------------------------------

    /// <summary>An ai.onnx op with one output: <c>Op("MatMul", [x, w])</c>.</summary>
    public Value Op(string opType, Value?[] inputs, params Attr[] attributes) =>
        Node(DefaultDomain, opType, inputs, 1, attributes)[0];

    /// <summary>A com.microsoft contrib op with one output.</summary>
    public Value MsOp(string opType, Value?[] inputs, params Attr[] attributes) =>
        Node(MicrosoftDomain, opType, inputs, 1, attributes)[0];

    /// <summary>
    /// The general form: any domain, any number of outputs. A null input is an omitted optional
    /// input (written as ""). Node and output names come from the current scope.
    /// </summary>
    public Value[] Node(string domain, string opType, Value?[] inputs, int outputCount, params Attr[] attributes)
    {
        EnsureOpen();
        if (string.IsNullOrEmpty(opType)) throw new ArgumentException("op type is empty", nameof(opType));
        if (outputCount < 1) throw new ArgumentOutOfRangeException(nameof(outputCount), outputCount, "a node needs at least one output");
        var duplicateAttribute = attributes.GroupBy(a => a.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicateAttribute is not null)
            throw new ArgumentException($"{opType}: attribute '{duplicateAttribute.Key}' given twice", nameof(attributes));

        string nodeName = ClaimNodeName($"{CurrentScope}/{opType}");
        var elementType = InferElementType(opType, inputs, attributes);
        var outputs = new Value[outputCount];
        for (int k = 0; k < outputCount; k++)
            outputs[k] = new Value(ClaimValueName($"{nodeName}/output_{k}"), k == 0 ? elementType : null, null, ValueKind.NodeOutput);
        _nodes.Add(new RecordedNode(nodeName, domain, opType, inputs.ToArray(), outputs, attributes.ToArray()));
        return outputs;
    }

    /// <summary>Records what is known of a value's type and shape (kept for graph outputs and tools).</summary>
    public Value Annotate(Value value, ElementType type, params Dim[] shape)
    {
        value.ElementType = type;
        value.Shape = shape.ToArray();
        return value;
    }

    // Element types that are not the first input's.
    private static ElementType? InferElementType(string opType, Value?[] inputs, Attr[] attributes) => opType switch
    {
        "Shape" or "Size" or "ArgMax" or "ArgMin" or "NonZero" => ElementType.Int64,
        "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" => ElementType.Bool,
        "Cast" => null, // set by the caller through Annotate or CastTo
        "Where" => inputs.Length > 1 ? inputs[1]?.ElementType : null,
        "Gather" or "GatherElements" or "GatherND" => inputs.Length > 0 ? inputs[0]?.ElementType : null,
        "Range" or "ConstantOfShape" => null,
        _ => inputs.Length > 0 ? inputs[0]?.ElementType : null,
    };

    // ---- graph outputs and metadata -----------------------------------------------------------

    /// <summary>
    /// Declares <paramref name="value"/> as a graph output named <paramref name="name"/>. A node
    /// output takes the name directly; a graph input or initializer is passed through Identity.
    /// </summary>
    public Value Output(Value value, string name, ElementType type, params Dim[] shape)
    {
        EnsureOpen();
        if (_outputs.Any(o => o.Value.Name == name)) throw new ArgumentException($"graph output '{name}' is declared twice", nameof(name));
        if (value.Kind == ValueKind.NodeOutput && value.Name != name && !_outputs.Any(o => ReferenceEquals(o.Value, value)))
        {
            if (_valueNames.Contains(name)) throw new ArgumentException($"cannot name graph output '{name}': another value has that name", nameof(name));
            _valueNames.Remove(value.Name);
            _valueNames.Add(name);
            value.Name = name;
        }
        else if (value.Name != name)
        {
            value = Op("Identity", [value]);
            return Output(value, name, type, shape);
        }
        Annotate(value, type, shape);
        _outputs.Add(new GraphOutput(value));
        return value;
    }

    /// <summary>Adds a metadata_props entry (family, lowering, precision, checksums, ...).</summary>
    public void Metadata(string key, string value)
    {
        EnsureOpen();
        _metadata.RemoveAll(kv => kv.Key == key);
        _metadata.Add(new(key, value));
    }

    /// <summary>Freezes the recording. The builder cannot be used afterwards.</summary>
    public OnnxModel Build(string producerName = "OnnxDecoder", string producerVersion = "0.1.0")
    {
        EnsureOpen();
        if (_scopes.Count != 0) throw new InvalidOperationException($"scope '{CurrentScope}' is still open");
        _built = true;
        var usedDomains = new SortedSet<string>(_nodes.Select(n => n.Domain), StringComparer.Ordinal) { DefaultDomain };
        var opsets = usedDomains.Select(d => new KeyValuePair<string, long>(d,
            _opsetVersions.TryGetValue(d, out var v) ? v : throw new InvalidOperationException($"no opset version known for domain '{d}': call UseOpset first"))).ToList();
        int irVersion = Math.Max(IrVersionForOpset(DefaultOpset),
            _initializers.Select(i => i.Source.ElementType).Concat(_inputs.Select(i => i.ElementType!.Value))
                .Select(t => t.MinimumIrVersion()).DefaultIfEmpty(3).Max());
        return new OnnxModel(GraphName, irVersion, producerName, producerVersion, opsets,
            _inputs.ToArray(), _outputs.Select(o => o.Value).ToArray(), _nodes.ToArray(),
            _initializers.ToArray(), _metadata.ToArray());
    }

    /// <summary>The lowest IR version that can declare an ai.onnx opset (IR 8 up to opset 18, ...).</summary>
    public static int IrVersionForOpset(int opset) => opset switch
    {
        <= 18 => 8,
        <= 20 => 9,
        <= 22 => 10,
        23 => 11,
        24 => 12,
        _ => 13,
    };

    private string ClaimValueName(string name)
    {
        if (string.IsNullOrEmpty(name)) throw new ArgumentException("value name is empty", nameof(name));
        if (!_valueNames.Add(name)) throw new ArgumentException($"value name '{name}' is already used in this graph", nameof(name));
        return name;
    }

    private string ClaimNodeName(string baseName)
    {
        string name = baseName;
        if (_nodeNameCounts.TryGetValue(baseName, out int count))
        {
            do { name = $"{baseName}_{count++}"; } while (_nodeNames.Contains(name));
            _nodeNameCounts[baseName] = count;
        }
        else
        {
            _nodeNameCounts[baseName] = 1;
        }
        _nodeNames.Add(name);
        return name;
    }

    private void EnsureOpen()
    {
        if (_built) throw new InvalidOperationException("this GraphBuilder has been built; start a new one");
    }

    private sealed record GraphOutput(Value Value);
}

/// <summary>One recorded node. Inputs may be null (an omitted optional input).</summary>
internal sealed record RecordedNode(string Name, string Domain, string OpType, Value?[] Inputs, Value[] Outputs, Attr[] Attributes);
