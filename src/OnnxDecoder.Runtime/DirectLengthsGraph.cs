using Google.Protobuf;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Runtime;

/// <summary>
/// The runtime's form of one of our GroupQueryAttention exports. On disk the graph derives GQA's per-row lengths and its
/// padding bias from attention_mask (onnxruntime-genai's contract), about a dozen small nodes that run on every step:
///   seqlens_k             [B] int32  = Cast(ReduceMax(attention_mask * Range(T)))      last column whose mask is 1
///   total_sequence_length []  int32  = Cast(Reshape(Shape(attention_mask)[1]))          T
///   attention_bias        [B, 1, S, T] = Expand(Where(Cast(Unsqueeze(attention_mask)), 0, lowest))   padding only
/// Our host already keeps that mask, so this rewrite (in memory; the file is not touched) makes the three values graph
/// inputs the host fills (<see cref="DirectLengthInputs"/>) and drops the nodes that computed them. It applies only to
/// graphs whose metadata says seqlens_k is the last attended column and whose nodes compute exactly the chains above;
/// anything else loads as it is.
/// </summary>
public static class DirectLengthsGraph
{
    /// <summary>Larger model files (weights inside the protobuf) load as they are: parsing and writing them again
    /// costs more than the nodes it saves.</summary>
    private const long MaxRewriteBytes = 64L << 20;
    private const string Gqa = "GroupQueryAttention";
    private const int SeqlensKInput = 5, TotalLengthInput = 6, AttentionBiasInput = 10;

    /// <summary>Whether the file is small enough to rewrite (larger ones hold their weights inside the protobuf).</summary>
    public static bool SmallEnough(string modelPath, out string reason) =>
        new FileInfo(modelPath).Length <= MaxRewriteBytes
            ? Accept(out reason)
            : Refuse($"the model file is over {MaxRewriteBytes >> 20} MiB (weights inside the protobuf)", out reason);

    /// <summary>Rewrites <paramref name="model"/> in place; false (unchanged) when it is not a graph this rewrite knows.</summary>
    public static bool Rewrite(ModelProto model, out string reason)
    {
        var graph = model.Graph;
        if (!model.MetadataProps.Any(p => p.Key == GraphContract.Metadata.GqaSeqlensK && p.Value == GraphContract.Metadata.GqaSeqlensKLastAttendedColumn))
            return Refuse("the graph does not say its seqlens_k is the last attended column", out reason);
        if (graph.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)))
            return Refuse("the graph has subgraphs", out reason);
        var names = graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(i => i.Name)).Concat(graph.Node.SelectMany(n => n.Output))
            .ToHashSet(StringComparer.Ordinal);
        if (new[] { GraphContract.DirectSeqlensK, GraphContract.DirectTotalSequenceLength, GraphContract.DirectAttentionBias }.Any(names.Contains))
            return Refuse("the graph already has a value named like a direct input", out reason);
        if (!graph.Input.Any(i => i.Name == GraphContract.AttentionMask)) return Refuse("the graph has no attention_mask input", out reason);

        var attentions = graph.Node.Where(n => n.OpType == Gqa && n.Domain == GraphBuilder.MicrosoftDomain).ToList();
        if (attentions.Count == 0) return Refuse("the graph has no GroupQueryAttention", out reason);
        string seqlensK = attentions[0].Input.ElementAtOrDefault(SeqlensKInput) ?? "", total = attentions[0].Input.ElementAtOrDefault(TotalLengthInput) ?? "";
        if (attentions.Any(n => n.Input.Count <= TotalLengthInput || n.Input[SeqlensKInput] != seqlensK || n.Input[TotalLengthInput] != total))
            return Refuse("the GroupQueryAttention nodes do not share one seqlens_k and total_sequence_length", out reason);
        var biases = attentions.Where(n => n.Input.Count > AttentionBiasInput && n.Input[AttentionBiasInput].Length > 0)
            .Select(n => n.Input[AttentionBiasInput]).Distinct(StringComparer.Ordinal).ToList();
        if (biases.Count > 1) return Refuse("the GroupQueryAttention nodes read different attention biases", out reason);

        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            foreach (var output in node.Output)
                if (output.Length > 0) producers[output] = node;
        if (!IsLastAttendedColumn(seqlensK, producers)) return Refuse("seqlens_k is not computed as the last attended column of attention_mask", out reason);
        if (!IsMaskWidth(total, producers)) return Refuse("total_sequence_length is not computed as attention_mask's width", out reason);
        int? biasType = null;
        if (biases.Count == 1)
        {
            var initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
            if (!IsPaddingBias(biases[0], producers, initializers, out int type))
                return Refuse("the attention bias is not computed from attention_mask's padding", out reason);
            biasType = type;
        }

        foreach (var node in attentions)
        {
            node.Input[SeqlensKInput] = GraphContract.DirectSeqlensK;
            node.Input[TotalLengthInput] = GraphContract.DirectTotalSequenceLength;
            if (biases.Count == 1 && node.Input.Count > AttentionBiasInput && node.Input[AttentionBiasInput] == biases[0])
                node.Input[AttentionBiasInput] = GraphContract.DirectAttentionBias;
        }
        graph.Input.Add(Input(GraphContract.DirectSeqlensK, (int)ElementType.Int32, Dim("batch_size")));
        graph.Input.Add(Input(GraphContract.DirectTotalSequenceLength, (int)ElementType.Int32));
        // Batch 1 broadcasts over the rows (the host binds one row of zeros when no row is padded).
        if (biasType is { } bias)
            graph.Input.Add(Input(GraphContract.DirectAttentionBias, bias,
                Dim("attention_bias_batch"), new() { DimValue = 1 }, Dim("sequence_length"), Dim("total_sequence_length")));
        RemoveDeadNodes(graph);
        return Accept(out reason);
    }

    /// <summary>Cast(int32) ← ReduceMax ← Mul(attention_mask, ...).</summary>
    private static bool IsLastAttendedColumn(string value, Dictionary<string, NodeProto> producers) =>
        Producer(value, producers, "Cast") is { } cast && CastsTo(cast, ElementType.Int32)
        && Producer(cast.Input[0], producers, "ReduceMax") is { } max
        && Producer(max.Input[0], producers, "Mul") is { } mul && mul.Input.Contains(GraphContract.AttentionMask);

    /// <summary>Cast(int32) ← Reshape ← Shape(attention_mask, start 1).</summary>
    private static bool IsMaskWidth(string value, Dictionary<string, NodeProto> producers) =>
        Producer(value, producers, "Cast") is { } cast && CastsTo(cast, ElementType.Int32)
        && Producer(cast.Input[0], producers, "Reshape") is { } reshape
        && Producer(reshape.Input[0], producers, "Shape") is { } shape && shape.Input[0] == GraphContract.AttentionMask
        && shape.Attribute.Any(a => a.Name == "start" && a.I == 1) && shape.Attribute.Any(a => a.Name == "end" && a.I == 2);

    /// <summary>Expand ← Where(Cast(bool) ← Unsqueeze(attention_mask), 0, lowest) in float32 or float16, whose element type
    /// <paramref name="elementType"/> returns: the host writes exactly those two values.</summary>
    private static bool IsPaddingBias(string value, Dictionary<string, NodeProto> producers, Dictionary<string, TensorProto> initializers, out int elementType)
    {
        elementType = 0;
        if (Producer(value, producers, "Expand") is not { } expand || Producer(expand.Input[0], producers, "Where") is not { } where
            || Producer(where.Input[0], producers, "Cast") is not { } cast || !CastsTo(cast, ElementType.Bool)
            || Producer(cast.Input[0], producers, "Unsqueeze") is not { } unsqueeze || unsqueeze.Input[0] != GraphContract.AttentionMask
            || where.Input.Count != 3 || !initializers.TryGetValue(where.Input[1], out var allowed) || !initializers.TryGetValue(where.Input[2], out var padding))
            return false;
        elementType = allowed.DataType;
        return elementType switch
        {
            (int)ElementType.Float => padding.DataType == elementType && ScalarFloat(allowed) == 0f && ScalarFloat(padding) == float.MinValue,
            (int)ElementType.Float16 => padding.DataType == elementType && ScalarHalf(allowed) == (Half)0f && ScalarHalf(padding) == Half.MinValue,
            _ => false,
        };
    }

    private static float? ScalarFloat(TensorProto tensor) =>
        tensor.Dims.Count != 0 || tensor.DataLocation == TensorProto.Types.DataLocation.External ? null
        : tensor.FloatData.Count == 1 ? tensor.FloatData[0]
        : tensor.RawData.Length == 4 ? BitConverter.ToSingle(tensor.RawData.Span) : null;

    private static Half? ScalarHalf(TensorProto tensor) =>
        tensor.Dims.Count != 0 || tensor.DataLocation == TensorProto.Types.DataLocation.External ? null
        : tensor.Int32Data.Count == 1 ? BitConverter.UInt16BitsToHalf((ushort)tensor.Int32Data[0])
        : tensor.RawData.Length == 2 ? BitConverter.ToHalf(tensor.RawData.Span) : null;

    private static NodeProto? Producer(string value, Dictionary<string, NodeProto> producers, string opType) =>
        producers.TryGetValue(value, out var node) && node.OpType == opType && node.Domain.Length == 0 && node.Input.Count > 0 ? node : null;

    private static bool CastsTo(NodeProto cast, ElementType type) => cast.Attribute.Any(a => a.Name == "to" && a.I == (int)type);

    private static TensorShapeProto.Types.Dimension Dim(string symbol) => new() { DimParam = symbol };

    private static ValueInfoProto Input(string name, int elementType, params TensorShapeProto.Types.Dimension[] dims)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = elementType, Shape = new TensorShapeProto() };
        tensor.Shape.Dim.AddRange(dims);
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }

    /// <summary>Drops nodes nothing reads any more (the graph's nodes are in topological order), the initializers only
    /// they read, and attention_mask when nothing reads it; every other input stays (the host binds what the config names).</summary>
    private static void RemoveDeadNodes(GraphProto graph)
    {
        var needed = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var kept = new List<NodeProto>();
        for (int i = graph.Node.Count - 1; i >= 0; i--)
        {
            var node = graph.Node[i];
            if (!node.Output.Any(needed.Contains)) continue;
            kept.Add(node);
            foreach (var input in node.Input) if (input.Length > 0) needed.Add(input);
        }
        kept.Reverse();
        graph.Node.Clear();
        graph.Node.AddRange(kept);
        var initializers = graph.Initializer.Where(t => needed.Contains(t.Name)).ToList();
        graph.Initializer.Clear();
        graph.Initializer.AddRange(initializers);
        var inputs = graph.Input.Where(i => i.Name != GraphContract.AttentionMask || needed.Contains(i.Name)).ToList();
        graph.Input.Clear();
        graph.Input.AddRange(inputs);
        var infos = graph.ValueInfo.Where(v => needed.Contains(v.Name)).ToList();
        graph.ValueInfo.Clear();
        graph.ValueInfo.AddRange(infos);
    }

    private static bool Accept(out string reason)
    {
        reason = "";
        return true;
    }

    private static bool Refuse(string why, out string reason)
    {
        reason = why;
        return false;
    }
}
