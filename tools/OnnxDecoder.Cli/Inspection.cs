using System.Text;
using OnnxDecoder.Exporters;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;
using OnnxDecoder.Runtime;

namespace OnnxDecoder.Cli;

/// <summary>`onnx-decoder inspect`: family, dimensions, parameter count, dtype and op histograms, inputs and outputs.</summary>
public static class Inspection
{
    public static string Describe(string path)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full) && File.Exists(Path.Combine(full, ModelFolder.ConfigFileName)))
        {
            var folder = ModelFolder.Open(full);
            return $"model folder {full}\n  type {folder.ModelType}, {folder.NumLayers} layers, {folder.NumHeads}/{folder.NumKvHeads} heads x {folder.HeadSize}, vocab {folder.VocabSize}, context {folder.ContextLength}, " +
                   $"eos {string.Join("/", folder.EosTokenIds)}, KV {(folder.PastPresentShareBuffer ? "shared buffer" : "separate buffers")}\n" + DescribeOnnx(folder.ModelPath, runtimeForm: true);
        }
        if (File.Exists(full) && full.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) return DescribeOnnx(full);
        using var checkpoint = Checkpoint.Open(full);
        var names = checkpoint.Weights.Names.Order(StringComparer.Ordinal).ToList();
        long parameters = names.Sum(n => ElementTypes.ElementCount(checkpoint.Weights.Get(n).Shape));
        var text = new StringBuilder();
        text.AppendLine($"checkpoint {full} ({checkpoint.Format})");
        if (checkpoint.TextDecoderOf is { } textDecoderOf) text.AppendLine($"  {textDecoderOf}");
        text.AppendLine($"  {checkpoint.Config}");
        text.AppendLine($"  family {Modeling.Families.FamilyRegistry.For(checkpoint.Config).Name}, {names.Count} tensors, {parameters:N0} parameters");
        text.AppendLine($"  dtypes: {string.Join(", ", checkpoint.StoredDTypes.GroupBy(d => d.Value).OrderBy(g => g.Key).Select(g => $"{g.Key} x {g.Count()}"))}");
        return text.ToString().TrimEnd();
    }

    /// <param name="runtimeForm">Also say how our runtime loads the graph (a model folder's): in its form with host-fed
    /// GroupQueryAttention lengths, or as exported and why.</param>
    private static string DescribeOnnx(string path, bool runtimeForm = false)
    {
        using var file = OnnxModelFile.Load(path);
        var model = file.Model;
        var graph = model.Graph;
        long parameters = graph.Initializer.Sum(t => ElementTypes.ElementCount(t.Dims));
        var text = new StringBuilder();
        text.AppendLine($"  {Path.GetFileName(path)}: IR {model.IrVersion}, opsets {string.Join(", ", model.OpsetImport.Select(o => $"{(o.Domain.Length == 0 ? "ai.onnx" : o.Domain)} {o.Version}"))}, producer {model.ProducerName} {model.ProducerVersion}");
        foreach (var prop in model.MetadataProps) text.AppendLine($"  metadata {prop.Key} = {prop.Value}");
        text.AppendLine($"  {graph.Node.Count} nodes, {graph.Initializer.Count} initializers, {parameters:N0} parameters ({file.ExternalTensors.Count} in external data, checked)");
        text.AppendLine($"  dtypes: {string.Join(", ", graph.Initializer.GroupBy(t => (TensorProto.Types.DataType)t.DataType).OrderBy(g => g.Key).Select(g => $"{g.Key} x {g.Count()}"))}");
        text.AppendLine($"  ops: {string.Join(", ", graph.Node.GroupBy(n => n.Domain.Length == 0 ? n.OpType : $"{n.Domain}.{n.OpType}").OrderByDescending(g => g.Count()).ThenBy(g => g.Key).Select(g => $"{g.Key} x {g.Count()}"))}");
        foreach (var input in graph.Input) text.AppendLine($"  input  {Signature(input)}");
        foreach (var output in graph.Output) text.AppendLine($"  output {Signature(output)}");
        if (runtimeForm)
        {
            int before = graph.Node.Count;
            text.AppendLine(DirectLengthsGraph.SmallEnough(path, out string reason) && DirectLengthsGraph.Rewrite(model, out reason) // in place, read above
                ? $"  runtime form: GroupQueryAttention lengths and padding bias fed by the host ({before} -> {graph.Node.Count} nodes before ONNX Runtime's fusions)"
                : $"  runtime form: as exported ({reason})");
            int quantized = graph.Node.Count(n => n.OpType == "MatMulNBits" && n.Domain == GraphBuilder.MicrosoftDomain);
            if (quantized > 0 && !DirectLengthsGraph.SmallEnough(path, out string large))
                text.AppendLine($"  CPU matmul kernels: ONNX Runtime's for all {quantized} MatMulNBits nodes ({large})");
            else if (quantized > 0)
            {
                int moved = NativeMatMulGraph.Rewrite(model); // in place, after the text above was read
                text.AppendLine($"  CPU matmul kernels: {moved} of {quantized} MatMulNBits nodes qualify for ours " +
                    (NativeKernels.IsAvailable ? $"(libonnxdecoder_kernels.so, {NativeKernels.Isa})" : $"(not available: {NativeKernels.UnavailableReason})"));
            }
        }
        return text.ToString().TrimEnd();
    }

    private static string Signature(ValueInfoProto value)
    {
        var tensor = value.Type?.TensorType;
        if (tensor is null) return value.Name;
        var dims = tensor.Shape?.Dim.Select(d => d.HasDimParam ? d.DimParam : d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture)) ?? [];
        return $"{value.Name}: {(TensorProto.Types.DataType)tensor.ElemType} [{string.Join(", ", dims)}]";
    }
}
