using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;
using static OnnxDecoder.Onnx.Proto.AttributeProto.Types;
using DimensionCase = OnnxDecoder.Onnx.Proto.TensorShapeProto.Types.Dimension.ValueOneofCase;

namespace OnnxDecoder.Runtime;

/// <summary>How many nodes of each fused op one <see cref="NativeFusionGraph.Rewrite"/> put in.</summary>
public readonly record struct NativeFusions(int SplitRotaryQkv, int SiluMul)
{
    public int Total => SplitRotaryQkv + SiluMul;
}

/// <summary>
/// The runtime's CPU form of two patterns our ort exports hold once a layer (the Splits of FusedProjections' qkv and
/// gate/up matmuls): three or four small kernels each, that one node of <see cref="NativeKernels.Domain"/>
/// (libonnxdecoder_kernels.so) replaces. On a small model the kernels' dispatch, not their arithmetic, bounds a decode
/// step. In memory only: the file stays standard, portable to onnxruntime-genai. The patterns, matched exactly:
///   SplitRotaryQkv  Split(X [B, S, (Hq + 2 Hkv) D], sizes [Hq D, Hkv D, Hkv D] (a constant, or equal parts of a declared
///                   width), axis -1 or the declared last axis) -> q, k, v, where q and k each feed exactly one
///                   com.microsoft RotaryEmbedding and nothing else. The two share position_ids, cos_cache and sin_cache
///                   (float) and interleaved; their num_heads are Hq and Hkv; one rotary_embedding_dim R (absent or 0: D;
///                   else even, at most D); is_packed_batching absent or 0, scale absent or 1, no other attribute;
///                   cos and sin [P, R/2] where their shape is known. One node takes X, position_ids, cos and sin and
///                   gives the two rotated outputs and v.
///   SiluMul         Split(X float [.., 2F], sizes [F, F] (or two equal parts), same axis rule) -> g, u; Sigmoid(g) -> s,
///                   Mul(g, s) -> a (either order), or com.microsoft QuickGelu(g) with alpha 1.0 -> a; Mul(a, u) -> y
///                   (either order); g, s, u and a read by exactly these nodes and by no graph output. One node X -> y.
/// The fused node takes the place of the last node it replaces, and a match whose outputs some node reads before that
/// place stays as it is, so the graph stays in topological order. Everything else loads as exported: other activations
/// (Gemma's GeGLU), q/k norms between the Split and the rotary (Qwen 3), rotary inside GroupQueryAttention (head sizes that
/// are multiples of 16), float16 graphs, shared intermediates.
/// </summary>
public static class NativeFusionGraph
{
    public const string SplitRotaryQkvOp = "SplitRotaryQkv", SiluMulOp = "SiluMul";
    private static readonly HashSet<string> RotaryAttributes = new(StringComparer.Ordinal)
        { "interleaved", "num_heads", "rotary_embedding_dim", "is_packed_batching", "scale" };
    private static readonly HashSet<string> SplitAttributes = new(StringComparer.Ordinal) { "axis", "split", "num_outputs" };

    /// <summary>Rewrites the matching patterns of <paramref name="model"/> in place and imports the ops' domain when any
    /// matched; returns how many of each.</summary>
    public static NativeFusions Rewrite(ModelProto model)
    {
        var graph = model.Graph;
        // Values a subgraph reads are not listed as inputs of its node: consumers would be miscounted.
        if (graph.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0))) return default;
        var index = new GraphIndex(graph);
        var replaced = new HashSet<int>();
        var placed = new Dictionary<int, NodeProto>();
        int rotaries = 0, silus = 0;
        for (int i = 0; i < graph.Node.Count; i++)
        {
            var split = graph.Node[i];
            if (split.OpType != "Split" || !IsDefaultDomain(split.Domain) || replaced.Contains(i)) continue;
            var match = MatchSplitRotary(index, i) ?? MatchSiluMul(index, i);
            if (match is not { } found || found.Replaced.Any(replaced.Contains)) continue;
            int place = found.Replaced.Max();
            if (found.Fused.Output.Any(output => index.ConsumersOf(output).Any(consumer => consumer < place))) continue;
            found.Fused.Name = index.UniqueName(NodeScope(split.Name) + found.Fused.OpType);
            replaced.UnionWith(found.Replaced);
            placed[place] = found.Fused;
            if (found.Fused.OpType == SplitRotaryQkvOp) rotaries++;
            else silus++;
        }
        if (placed.Count == 0) return default;

        var nodes = new List<NodeProto>(graph.Node.Count);
        var removedValues = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < graph.Node.Count; i++)
        {
            if (replaced.Contains(i)) removedValues.UnionWith(graph.Node[i].Output);
            if (placed.TryGetValue(i, out var fused)) nodes.Add(fused);
            else if (!replaced.Contains(i)) nodes.Add(graph.Node[i]);
        }
        removedValues.ExceptWith(placed.Values.SelectMany(n => n.Output));
        graph.Node.Clear();
        graph.Node.AddRange(nodes);
        var infos = graph.ValueInfo.Where(v => !removedValues.Contains(v.Name)).ToList();
        graph.ValueInfo.Clear();
        graph.ValueInfo.AddRange(infos);
        if (!model.OpsetImport.Any(o => o.Domain == NativeKernels.Domain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = NativeKernels.Domain, Version = NativeKernels.OpsetVersion });
        return new NativeFusions(rotaries, silus);
    }

    private sealed record Match(NodeProto Fused, int[] Replaced);

    //   X ─Split─ q ─RotaryEmbedding(num_heads Hq)─ q'      X, position_ids, cos, sin ─SplitRotaryQkv─ q', k', v
    //           ├ k ─RotaryEmbedding(num_heads Hkv)─ k'
    //           └ v
    private static Match? MatchSplitRotary(GraphIndex index, int splitAt)
    {
        var split = index.Nodes[splitAt];
        if (split.Output.Count != 3 || split.Output.Any(o => o.Length == 0) || !LastAxis(index, split, 3)) return null;
        if (index.IsGraphOutput(split.Output[0]) || index.IsGraphOutput(split.Output[1])) return null;
        if (index.SoleConsumer(split.Output[0]) is not { } qAt || index.SoleConsumer(split.Output[1]) is not { } kAt) return null;
        NodeProto qRotary = index.Nodes[qAt], kRotary = index.Nodes[kAt];
        if (!IsRotary(qRotary, split.Output[0]) || !IsRotary(kRotary, split.Output[1])) return null;
        if (!qRotary.Input.Skip(1).SequenceEqual(kRotary.Input.Skip(1))) return null; // position_ids, cos_cache, sin_cache
        if (Int(qRotary, "num_heads") is not { } heads || Int(kRotary, "num_heads") is not { } kvHeads) return null;
        if (heads <= 0 || kvHeads <= 0) return null;
        long interleaved = Int(qRotary, "interleaved") ?? 0, rotaryDim = Int(qRotary, "rotary_embedding_dim") ?? 0;
        if (interleaved is not (0 or 1) || (Int(kRotary, "interleaved") ?? 0) != interleaved) return null;
        if ((Int(kRotary, "rotary_embedding_dim") ?? 0) != rotaryDim) return null;

        string cos = qRotary.Input[2], sin = qRotary.Input[3];
        long? halfFromCaches = CacheHalfWidth(index, cos, sin);
        if (SplitSizes(index, split, 3) is not [var qWidth, var kWidth, var vWidth]) return null;
        if (qWidth % heads != 0 || kWidth % kvHeads != 0 || kWidth != vWidth || qWidth / heads != kWidth / kvHeads) return null;
        long headSize = qWidth / heads;
        if (rotaryDim == 0) rotaryDim = headSize;
        if (headSize <= 0 || rotaryDim <= 0 || rotaryDim % 2 != 0 || rotaryDim > headSize) return null;
        if (halfFromCaches is { } half && half != rotaryDim / 2) return null;
        if (index.ElementTypeOf(cos) != (int)ElementType.Float || index.ElementTypeOf(sin) != (int)ElementType.Float) return null;
        if (index.ElementTypeOf(qRotary.Input[1]) is { } positionType && positionType != (int)ElementType.Int64) return null;

        var fused = new NodeProto { OpType = SplitRotaryQkvOp, Domain = NativeKernels.Domain };
        fused.Input.AddRange([split.Input[0], qRotary.Input[1], cos, sin]);
        fused.Output.AddRange([qRotary.Output[0], kRotary.Output[0], split.Output[2]]);
        fused.Attribute.AddRange([IntAttribute("num_heads", heads), IntAttribute("kv_num_heads", kvHeads),
            IntAttribute("head_size", headSize), IntAttribute("rotary_dim", rotaryDim), IntAttribute("interleaved", interleaved)]);
        return new Match(fused, [splitAt, qAt, kAt]);
    }

    /// <summary>A com.microsoft RotaryEmbedding of <paramref name="input"/> with its four inputs, one output and only the
    /// attributes (and values) the fused op reproduces.</summary>
    private static bool IsRotary(NodeProto node, string input)
    {
        if (node.OpType != "RotaryEmbedding" || node.Domain != GraphBuilder.MicrosoftDomain) return false;
        if (node.Input.Count != 4 || node.Input[0] != input || node.Input.Any(i => i.Length == 0)) return false;
        if (node.Output.Count != 1 || node.Output[0].Length == 0) return false;
        foreach (var attribute in node.Attribute)
        {
            if (!RotaryAttributes.Contains(attribute.Name)) return false;
            bool expected = attribute.Name == "scale" ? attribute is { Type: AttributeType.Float, F: 1f } : attribute.Type == AttributeType.Int;
            if (!expected) return false;
        }
        return (Int(node, "is_packed_batching") ?? 0) == 0;
    }

    /// <summary>R/2 from the cos and sin caches' shapes [P, R/2] where known (both must agree); null when unknown.</summary>
    private static long? CacheHalfWidth(GraphIndex index, string cos, string sin)
    {
        long? cosHalf = index.LastDim(cos, rank: 2), sinHalf = index.LastDim(sin, rank: 2);
        if (cosHalf is { } a && sinHalf is { } b && a != b) return -1; // never equals R/2: no match
        return cosHalf ?? sinHalf;
    }

    //   X ─Split─ g ─Sigmoid─ s ─Mul(g, s)─ a ─Mul(a, u)─ y      X ─SiluMul─ y
    //           └ u ─────────────────────────┘
    private static Match? MatchSiluMul(GraphIndex index, int splitAt)
    {
        var split = index.Nodes[splitAt];
        if (split.Output.Count != 2 || split.Output.Any(o => o.Length == 0) || !LastAxis(index, split, 2)) return null;
        string gate = split.Output[0], up = split.Output[1];
        if (!EqualHalves(index, split)) return null;
        if (index.ElementTypeOf(split.Input[0]) != (int)ElementType.Float) return null;
        if (index.IsGraphOutput(gate) || index.IsGraphOutput(up)) return null;

        var gateReaders = index.ConsumersOf(gate);
        int activatedAt;
        var replaced = new List<int> { splitAt };
        if (gateReaders.Count == 1 && index.Nodes[gateReaders[0]] is var quickGelu && quickGelu.OpType == "QuickGelu"
            && quickGelu.Domain == GraphBuilder.MicrosoftDomain && quickGelu.Input.Count == 1 && quickGelu.Output.Count == 1
            && quickGelu.Attribute.Count == 1 && quickGelu.Attribute[0] is { Name: "alpha", Type: AttributeType.Float, F: 1f })
        {
            activatedAt = gateReaders[0];
            replaced.Add(activatedAt);
        }
        else
        {
            if (gateReaders.Count != 2) return null;
            int sigmoidAt = gateReaders.FirstOrDefault(r => index.Nodes[r].OpType == "Sigmoid", -1);
            if (sigmoidAt < 0) return null;
            int mulAt = gateReaders.First(r => r != sigmoidAt);
            var sigmoid = index.Nodes[sigmoidAt];
            if (!IsDefaultDomain(sigmoid.Domain) || sigmoid.Input.Count != 1 || sigmoid.Output.Count != 1 || sigmoid.Attribute.Count != 0)
                return null;
            string sigmoidOut = sigmoid.Output[0];
            if (index.IsGraphOutput(sigmoidOut) || index.SoleConsumer(sigmoidOut) != mulAt) return null;
            if (!IsMulOf(index.Nodes[mulAt], gate, sigmoidOut)) return null;
            activatedAt = mulAt;
            replaced.AddRange([sigmoidAt, mulAt]);
        }
        string activated = index.Nodes[activatedAt].Output[0];
        if (activated.Length == 0 || index.IsGraphOutput(activated) || index.SoleConsumer(activated) is not { } productAt) return null;
        if (index.SoleConsumer(up) != productAt || !IsMulOf(index.Nodes[productAt], activated, up)) return null;
        replaced.Add(productAt);

        var fused = new NodeProto { OpType = SiluMulOp, Domain = NativeKernels.Domain };
        fused.Input.Add(split.Input[0]);
        fused.Output.Add(index.Nodes[productAt].Output[0]);
        return new Match(fused, [.. replaced]);
    }

    /// <summary>A plain Mul of exactly <paramref name="a"/> and <paramref name="b"/>, either order.</summary>
    private static bool IsMulOf(NodeProto node, string a, string b) =>
        node.OpType == "Mul" && IsDefaultDomain(node.Domain) && node.Attribute.Count == 0 && node.Input.Count == 2
        && node.Output.Count == 1 && node.Output[0].Length > 0
        && ((node.Input[0] == a && node.Input[1] == b) || (node.Input[0] == b && node.Input[1] == a));

    /// <summary>The Split cuts its input's last axis (axis -1, or the declared rank's last) and has only Split's attributes.</summary>
    private static bool LastAxis(GraphIndex index, NodeProto split, int outputs)
    {
        if (split.Input.Count is < 1 or > 2 || split.Input[0].Length == 0) return false;
        if (split.Attribute.Any(a => !SplitAttributes.Contains(a.Name))) return false;
        if (Int(split, "num_outputs") is { } count && count != outputs) return false;
        long axis = Int(split, "axis") ?? 0;
        return axis == -1 || (index.Rank(split.Input[0]) is { } rank && axis == rank - 1);
    }

    /// <summary>The sizes the Split cuts (its split input or attribute, or equal parts of a declared width); null when unknown.</summary>
    private static long[]? SplitSizes(GraphIndex index, NodeProto split, int outputs)
    {
        long[]? sizes = split.Input.Count == 2 && split.Input[1].Length > 0 ? index.ConstantInt64s(split.Input[1])
            : split.Attribute.FirstOrDefault(a => a.Name == "split") is { Type: AttributeType.Ints } attribute ? [.. attribute.Ints]
            : null;
        if (sizes is not null) return sizes.Length == outputs && sizes.All(s => s > 0) ? sizes : null;
        if (split.Input.Count == 2 && split.Input[1].Length > 0) return null; // a split input we cannot read
        // Equal parts: exact only when the declared width divides (opset 18's num_outputs makes the last part smaller).
        return index.LastDim(split.Input[0], rank: null) is { } width && width > 0 && width % outputs == 0
            ? Enumerable.Repeat(width / outputs, outputs).ToArray() : null;
    }

    /// <summary>The Split cuts two equal halves: sizes [F, F], or no sizes and no num_outputs (before opset 18 an equal split,
    /// which ONNX Runtime refuses when the width is odd), or equal parts of a declared even width.</summary>
    private static bool EqualHalves(GraphIndex index, NodeProto split)
    {
        bool noSizes = (split.Input.Count < 2 || split.Input[1].Length == 0) && !split.Attribute.Any(a => a.Name == "split");
        if (noSizes && Int(split, "num_outputs") is null) return true;
        return SplitSizes(index, split, 2) is [var first, var second] && first == second;
    }

    private static bool IsDefaultDomain(string domain) => domain is "" or "ai.onnx";

    /// <summary>The node's scope ("/model/layers.0/attn/qkv_proj/"), so the fused node's name shows where it sits.</summary>
    private static string NodeScope(string nodeName) => nodeName.LastIndexOf('/') is var at and >= 0 ? nodeName[..(at + 1)] : "";

    private static long? Int(NodeProto node, string name) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { Type: AttributeType.Int } attribute ? attribute.I : null;

    private static AttributeProto IntAttribute(string name, long value) => new() { Name = name, Type = AttributeType.Int, I = value };

    /// <summary>Who produces and reads each value, the declared types and shapes, and what element type a value has where
    /// it can be followed back to a declaration through ops whose output type is an input's.</summary>
    private sealed class GraphIndex
    {
        public readonly IList<NodeProto> Nodes;
        private readonly Dictionary<string, int> _producers = new(StringComparer.Ordinal);
        private readonly Dictionary<string, List<int>> _consumers = new(StringComparer.Ordinal);
        private readonly Dictionary<string, TensorProto> _initializers = new(StringComparer.Ordinal);
        private readonly Dictionary<string, TypeProto.Types.Tensor> _declared = new(StringComparer.Ordinal);
        private readonly HashSet<string> _graphOutputs = new(StringComparer.Ordinal);
        private readonly HashSet<string> _nodeNames = new(StringComparer.Ordinal);
        private readonly Dictionary<string, int?> _elementTypes = new(StringComparer.Ordinal);

        public GraphIndex(GraphProto graph)
        {
            Nodes = graph.Node;
            for (int i = 0; i < graph.Node.Count; i++)
            {
                var node = graph.Node[i];
                _nodeNames.Add(node.Name);
                foreach (var input in node.Input)
                    if (input.Length > 0)
                    {
                        if (!_consumers.TryGetValue(input, out var readers)) _consumers[input] = readers = [];
                        readers.Add(i);
                    }
                foreach (var output in node.Output)
                    if (output.Length > 0) _producers.TryAdd(output, i);
            }
            foreach (var tensor in graph.Initializer) _initializers.TryAdd(tensor.Name, tensor);
            // A graph input of the same name overrides an initializer (a caller may feed it): no constant.
            foreach (var input in graph.Input) _initializers.Remove(input.Name);
            foreach (var info in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo))
                if (info.Type?.TensorType is { } tensor) _declared.TryAdd(info.Name, tensor);
            _graphOutputs.UnionWith(graph.Output.Select(o => o.Name));
        }

        public IReadOnlyList<int> ConsumersOf(string value) => _consumers.TryGetValue(value, out var readers) ? readers : [];

        /// <summary>The one node reading <paramref name="value"/>, once; null when none, several, or one reading it twice.</summary>
        public int? SoleConsumer(string value) => ConsumersOf(value) is [var only] ? only : null;

        public bool IsGraphOutput(string value) => _graphOutputs.Contains(value);

        public string UniqueName(string wanted)
        {
            string name = wanted;
            for (int n = 1; !_nodeNames.Add(name); n++) name = $"{wanted}_{n}";
            return name;
        }

        /// <summary>The declared (or initializer) rank of <paramref name="value"/>; null when unknown.</summary>
        public int? Rank(string value) =>
            _initializers.TryGetValue(value, out var tensor) ? tensor.Dims.Count
            : _declared.TryGetValue(value, out var declared) && declared.Shape is { } shape ? shape.Dim.Count : null;

        /// <summary>The last dimension of <paramref name="value"/> where known (and, when <paramref name="rank"/> is given
        /// and the rank known, -1 for another rank, which matches no width).</summary>
        public long? LastDim(string value, int? rank)
        {
            IReadOnlyList<long?> dims;
            if (_initializers.TryGetValue(value, out var tensor)) dims = [.. tensor.Dims.Select(d => (long?)d)];
            else if (_declared.TryGetValue(value, out var declared) && declared.Shape is { } shape)
                dims = [.. shape.Dim.Select(d => d.ValueCase == DimensionCase.DimValue ? (long?)d.DimValue : null)];
            else return null;
            if (rank is { } wanted && dims.Count != wanted) return -1;
            return dims.Count == 0 ? null : dims[^1];
        }

        /// <summary>The values of a 1-D int64 constant (initializer or Constant node); null when it is no readable constant.</summary>
        public long[]? ConstantInt64s(string value)
        {
            TensorProto? tensor = _initializers.GetValueOrDefault(value);
            if (tensor is null && _producers.TryGetValue(value, out int at) && Nodes[at] is { OpType: "Constant" } constant
                && IsDefaultDomain(constant.Domain))
            {
                if (constant.Attribute.FirstOrDefault(a => a.Name == "value_ints") is { Type: AttributeType.Ints } ints)
                    return [.. ints.Ints];
                tensor = constant.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
            }
            if (tensor is null || tensor.DataType != (int)ElementType.Int64 || tensor.Dims.Count != 1
                || tensor.DataLocation == TensorProto.Types.DataLocation.External) return null;
            if (tensor.Int64Data.Count == tensor.Dims[0]) return [.. tensor.Int64Data];
            if (tensor.RawData.Length != tensor.Dims[0] * sizeof(long)) return null;
            var values = new long[tensor.Dims[0]];
            for (int i = 0; i < values.Length; i++) values[i] = BitConverter.ToInt64(tensor.RawData.Span[(i * sizeof(long))..]);
            return values;
        }

        /// <summary>The element type of <paramref name="value"/>: declared, an initializer's, a Cast's, or followed back
        /// through ops whose output has the type of a given input; null when that ends nowhere.</summary>
        public int? ElementTypeOf(string value)
        {
            if (_elementTypes.TryGetValue(value, out var known)) return known;
            _elementTypes[value] = null; // a cycle (a malformed graph) ends as unknown
            int? type = Resolve(value);
            _elementTypes[value] = type;
            return type;
        }

        private int? Resolve(string value)
        {
            if (_initializers.TryGetValue(value, out var tensor)) return tensor.DataType;
            if (_declared.TryGetValue(value, out var declared) && declared.ElemType != 0) return declared.ElemType;
            if (!_producers.TryGetValue(value, out int at)) return null;
            var node = Nodes[at];
            int output = node.Output.IndexOf(value);
            int? From(int input) => node.Input.Count > input && node.Input[input].Length > 0 ? ElementTypeOf(node.Input[input]) : null;
            bool standard = IsDefaultDomain(node.Domain), microsoft = node.Domain == GraphBuilder.MicrosoftDomain;
            return node.OpType switch
            {
                "Cast" when standard => Int(node, "to") is { } to ? (int)to : null,
                "Where" when standard => From(1) ?? From(2),
                "MatMul" or "Add" or "Sub" or "Mul" or "Div" when standard => From(0) ?? From(1),
                "Gather" or "Reshape" or "Transpose" or "Squeeze" or "Unsqueeze" or "Split" or "Slice" or "Concat" or "Expand"
                    or "Sigmoid" or "Tanh" or "Erf" or "Softmax" or "Identity" or "Neg" when standard => From(0),
                "SimplifiedLayerNormalization" or "LayerNormalization" when standard && output == 0 => From(0),
                "SkipSimplifiedLayerNormalization" or "SkipLayerNormalization" when microsoft && output is 0 or 3 => From(0),
                "MatMulNBits" or "RotaryEmbedding" or "QuickGelu" when microsoft => From(0),
                "GroupQueryAttention" when microsoft && output == 0 => From(0),
                "GatherBlockQuantized" when microsoft => From(2),
                "MatMulNBits" when node.Domain == NativeKernels.Domain => From(0),
                _ => null,
            };
        }
    }
}
