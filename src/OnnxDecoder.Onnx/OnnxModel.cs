using Google.Protobuf;
using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Onnx;

/// <summary>
/// A built graph: nodes, declared inputs and outputs, and initializers whose bytes are still held
/// by their sources. <see cref="ModelWriter"/> turns it into files; <see cref="ToModelProto"/> gives
/// an in-memory model with every tensor inline (for models well under 2 GiB).
/// </summary>
public sealed class OnnxModel
{
    internal OnnxModel(string graphName, int irVersion, string producerName, string producerVersion,
        IReadOnlyList<KeyValuePair<string, long>> opsets, Value[] inputs, Value[] outputs, RecordedNode[] nodes,
        (Value Value, ITensorSource Source)[] initializers, KeyValuePair<string, string>[] metadata)
    {
        GraphName = graphName;
        IrVersion = irVersion;
        ProducerName = producerName;
        ProducerVersion = producerVersion;
        Opsets = opsets;
        Inputs = inputs;
        Outputs = outputs;
        Nodes = nodes;
        Initializers = initializers;
        MetadataProps = metadata;
    }

    public string GraphName { get; }
    public int IrVersion { get; }
    public string ProducerName { get; }
    public string ProducerVersion { get; }
    public IReadOnlyList<KeyValuePair<string, long>> Opsets { get; }
    public IReadOnlyList<Value> Inputs { get; }
    public IReadOnlyList<Value> Outputs { get; }
    internal IReadOnlyList<RecordedNode> Nodes { get; }
    internal IReadOnlyList<(Value Value, ITensorSource Source)> Initializers { get; }
    public IReadOnlyList<KeyValuePair<string, string>> MetadataProps { get; }

    public int NodeCount => Nodes.Count;

    /// <summary>Op types and how often each occurs, e.g. for <c>inspect</c>.</summary>
    public IReadOnlyDictionary<string, int> OpHistogram() =>
        Nodes.GroupBy(n => n.Domain.Length == 0 ? n.OpType : $"{n.Domain}.{n.OpType}")
             .OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count());

    /// <summary>Total bytes of all initializers.</summary>
    public long WeightBytes => Initializers.Sum(i => i.Source.ByteLength);

    /// <summary>An in-memory ModelProto with all tensors inline; fails above the 2 GiB protobuf limit.</summary>
    public ModelProto ToModelProto()
    {
        if (WeightBytes > ModelWriter.MaxProtobufBytes)
            throw new InvalidOperationException($"the model holds {WeightBytes} bytes of weights, over protobuf's 2 GiB limit: save it with ModelWriter, which moves large tensors to external data");
        return BuildProto(source =>
        {
            var bytes = ByteString.CopyFrom(source.ToArray());
            return tensor => tensor.RawData = bytes;
        });
    }

    /// <summary>
    /// Builds the ModelProto; <paramref name="placeTensor"/> decides per initializer how its data is
    /// stored by returning an action that fills the TensorProto (raw bytes inline, or external refs).
    /// </summary>
    internal ModelProto BuildProto(Func<ITensorSource, Action<TensorProto>?> placeTensor)
    {
        var graph = new GraphProto { Name = GraphName };
        foreach (var input in Inputs) graph.Input.Add(ValueInfo(input));
        foreach (var output in Outputs) graph.Output.Add(ValueInfo(output));
        foreach (var (value, source) in Initializers)
        {
            var tensor = new TensorProto { Name = value.Name, DataType = (int)source.ElementType };
            tensor.Dims.AddRange(source.Shape);
            placeTensor(source)?.Invoke(tensor);
            graph.Initializer.Add(tensor);
        }
        foreach (var node in Nodes)
        {
            var proto = new NodeProto { Name = node.Name, OpType = node.OpType, Domain = node.Domain };
            proto.Input.AddRange(node.Inputs.Select(i => i?.Name ?? ""));
            proto.Output.AddRange(node.Outputs.Select(o => o.Name));
            proto.Attribute.AddRange(node.Attributes.Select(a => a.ToProto()));
            graph.Node.Add(proto);
        }

        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = ProducerName,
            ProducerVersion = ProducerVersion,
            Graph = graph,
        };
        foreach (var (domain, version) in Opsets) model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        foreach (var (key, value) in MetadataProps) model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        return model;
    }

    internal static ValueInfoProto ValueInfo(Value value)
    {
        var tensorType = new TypeProto.Types.Tensor();
        if (value.ElementType is { } type) tensorType.ElemType = (int)type;
        if (value.Shape is { } shape)
        {
            tensorType.Shape = new TensorShapeProto();
            foreach (var dim in shape)
                tensorType.Shape.Dim.Add(dim.IsFixed ? new TensorShapeProto.Types.Dimension { DimValue = dim.Size!.Value } : new TensorShapeProto.Types.Dimension { DimParam = dim.Symbol });
        }
        return new ValueInfoProto { Name = value.Name, Type = new TypeProto { TensorType = tensorType } };
    }
}
