using OnnxDecoder.Onnx.Proto;
using static OnnxDecoder.Onnx.Proto.AttributeProto.Types;

namespace OnnxDecoder.Onnx;

/// <summary>The model failed <see cref="ModelChecker"/>; <see cref="Errors"/> lists every problem.</summary>
public sealed class OnnxModelCheckException(string modelName, IReadOnlyList<string> errors)
    : Exception($"{modelName}: {errors.Count} problem(s) in the graph: " + string.Join("; ", errors.Take(20)) + (errors.Count > 20 ? "; ..." : ""))
{
    public IReadOnlyList<string> Errors { get; } = errors;
}

/// <summary>
/// Structural checks that run before a model is saved (and on models read from elsewhere):
/// topological order, every input defined, unique value and node names, declared graph outputs,
/// an opset import for every domain used, and attribute types. Every error names the node and
/// the value it concerns.
/// </summary>
public static class ModelChecker
{
    public static IReadOnlyList<string> Check(ModelProto model)
    {
        var errors = new List<string>();
        var graph = model.Graph;
        if (graph is null) { errors.Add("the model has no graph"); return errors; }

        var imported = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var opset in model.OpsetImport)
        {
            string domain = NormalizeDomain(opset.Domain);
            if (!imported.TryAdd(domain, opset.Version)) errors.Add($"opset import for domain '{domain}' is listed twice");
        }
        if (!imported.ContainsKey("")) errors.Add("the model imports no ai.onnx opset");

        // Values defined so far, in file order: graph inputs and initializers first, then each node's outputs.
        var defined = new HashSet<string>(StringComparer.Ordinal);
        var producedLater = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            foreach (var output in node.Output)
                if (output.Length > 0) producedLater.TryAdd(output, node.Name);

        foreach (var input in graph.Input)
        {
            if (!defined.Add(input.Name)) errors.Add($"graph input '{input.Name}' is declared twice");
            if (input.Type?.TensorType?.ElemType is null or 0) errors.Add($"graph input '{input.Name}' has no element type");
        }
        var initializerNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in graph.Initializer)
        {
            if (!initializerNames.Add(tensor.Name)) errors.Add($"initializer '{tensor.Name}' is defined twice");
            defined.Add(tensor.Name); // an initializer may also be listed as a graph input (a default value)
        }

        var nodeNames = new HashSet<string>(StringComparer.Ordinal);
        for (int index = 0; index < graph.Node.Count; index++)
        {
            var node = graph.Node[index];
            string where = node.Name.Length > 0 ? $"node '{node.Name}' ({node.OpType})" : $"node #{index} ({node.OpType})";
            if (node.Name.Length > 0 && !nodeNames.Add(node.Name)) errors.Add($"{where}: node name is used twice");
            if (!imported.ContainsKey(NormalizeDomain(node.Domain)))
                errors.Add($"{where}: domain '{node.Domain}' has no opset import");

            foreach (var input in node.Input)
            {
                if (input.Length == 0 || defined.Contains(input)) continue;
                errors.Add(producedLater.TryGetValue(input, out var producer)
                    ? $"{where}: input '{input}' is produced by '{producer}', which comes later (nodes are not in topological order)"
                    : $"{where}: input '{input}' is not defined by any graph input, initializer or node");
            }
            foreach (var output in node.Output)
            {
                if (output.Length == 0) continue;
                if (!defined.Add(output)) errors.Add($"{where}: output '{output}' is already defined elsewhere (value names must be unique)");
            }
            CheckAttributes(node, where, errors);
        }

        var outputNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var output in graph.Output)
        {
            if (!outputNames.Add(output.Name)) errors.Add($"graph output '{output.Name}' is declared twice");
            if (!defined.Contains(output.Name)) errors.Add($"graph output '{output.Name}' is not produced by any node, input or initializer");
            if (output.Type?.TensorType?.ElemType is null or 0) errors.Add($"graph output '{output.Name}' has no element type");
        }
        if (graph.Output.Count == 0) errors.Add("the graph declares no outputs");
        return errors;
    }

    public static void ThrowIfInvalid(ModelProto model, string modelName)
    {
        var errors = Check(model);
        if (errors.Count > 0) throw new OnnxModelCheckException(modelName, errors);
    }

    private static string NormalizeDomain(string domain) => domain == "ai.onnx" ? "" : domain;

    private static void CheckAttributes(NodeProto node, string where, List<string> errors)
    {
        OpAttributes.Schemas.TryGetValue((NormalizeDomain(node.Domain), node.OpType), out var schema);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var attribute in node.Attribute)
        {
            string what = $"{where}: attribute '{attribute.Name}'";
            if (!seen.Add(attribute.Name)) errors.Add($"{what} is given twice");
            if (attribute.Type == AttributeType.Undefined) { errors.Add($"{what} has no type"); continue; }

            int valueFields = (attribute.HasF ? 1 : 0) + (attribute.HasI ? 1 : 0) + (attribute.HasS ? 1 : 0)
                + (attribute.T is null ? 0 : 1) + (attribute.G is null ? 0 : 1)
                + (attribute.Floats.Count > 0 ? 1 : 0) + (attribute.Ints.Count > 0 ? 1 : 0) + (attribute.Strings.Count > 0 ? 1 : 0)
                + (attribute.Tensors.Count > 0 ? 1 : 0) + (attribute.Graphs.Count > 0 ? 1 : 0);
            bool isList = attribute.Type is AttributeType.Floats or AttributeType.Ints or AttributeType.Strings or AttributeType.Tensors or AttributeType.Graphs;
            bool valueMatchesType = attribute.Type switch
            {
                AttributeType.Float => attribute.HasF,
                AttributeType.Int => attribute.HasI,
                AttributeType.String => attribute.HasS,
                AttributeType.Tensor => attribute.T is not null,
                AttributeType.Graph => attribute.G is not null,
                AttributeType.Floats => valueFields == 0 || attribute.Floats.Count > 0,
                AttributeType.Ints => valueFields == 0 || attribute.Ints.Count > 0,
                AttributeType.Strings => valueFields == 0 || attribute.Strings.Count > 0,
                AttributeType.Tensors => valueFields == 0 || attribute.Tensors.Count > 0,
                AttributeType.Graphs => valueFields == 0 || attribute.Graphs.Count > 0,
                _ => false,
            };
            if (valueFields > 1 || (!isList && valueFields == 0) || !valueMatchesType)
                errors.Add($"{what} is declared {attribute.Type} but holds {valueFields} value field(s) that do not match it");

            if (schema is not null)
            {
                if (!schema.TryGetValue(attribute.Name, out var expected))
                    errors.Add($"{what} is not an attribute of {node.OpType} (known: {string.Join(", ", schema.Keys.Order(StringComparer.Ordinal))})");
                else if (expected != attribute.Type)
                    errors.Add($"{what} must be {expected}, not {attribute.Type}");
            }
        }
    }
}
