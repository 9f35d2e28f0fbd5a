using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Runtime;

/// <summary>
/// The runtime's CPU form of a quantized export: each com.microsoft MatMulNBits node that our kernels compute exactly as
/// ONNX Runtime's accuracy-level-4 path would (float A [.., K] quantized per block of 32 to int8, symmetric weights with
/// the implicit zero point) moves to the domain <see cref="NativeKernels.Domain"/>, whose MatMulNBits
/// (libonnxdecoder_kernels.so) takes the same inputs and attributes. In memory only: the file stays standard
/// MatMulNBits, portable to onnxruntime-genai. A node qualifies when it has
///   inputs   exactly A, B, scales (trailing empty names dropped): no zero points, g_idx or bias
///   B        a uint8 initializer [N, ceil(K/32), 32 * bits / 8]
///   scales   a float initializer [N * ceil(K/32)] or [N, ceil(K/32)] (float scales: A is float too, the op's one type T1)
///   attrs    K, N, bits 4 or 8, block_size 32, accuracy_level 4, nothing else
/// Every other node, MatMulNBits or not, is left as it is.
/// </summary>
public static class NativeMatMulGraph
{
    private const string MatMulNBits = "MatMulNBits";
    private const int BlockSize = 32, AccuracyLevel = 4;
    private static readonly HashSet<string> KnownAttributes = new(StringComparer.Ordinal) { "K", "N", "bits", "block_size", "accuracy_level" };

    /// <summary>Rewrites the qualifying nodes of <paramref name="model"/> in place and imports the op's domain when any
    /// did; returns how many.</summary>
    public static int Rewrite(ModelProto model)
    {
        var graph = model.Graph;
        var initializers = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var tensor in graph.Initializer) initializers.TryAdd(tensor.Name, tensor);
        // A graph input of the same name overrides an initializer (a caller may feed it), so it is no constant weight.
        foreach (var input in graph.Input) initializers.Remove(input.Name);
        var declaredTypes = graph.ValueInfo.Concat(graph.Input)
            .Where(v => v.Type?.TensorType is not null)
            .GroupBy(v => v.Name, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.First().Type.TensorType.ElemType, StringComparer.Ordinal);
        int rewritten = 0;
        foreach (var node in graph.Node)
        {
            if (!Qualifies(node, initializers, declaredTypes)) continue;
            while (node.Input.Count > 3) node.Input.RemoveAt(node.Input.Count - 1);
            node.Domain = NativeKernels.Domain;
            rewritten++;
        }
        if (rewritten > 0 && !model.OpsetImport.Any(o => o.Domain == NativeKernels.Domain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = NativeKernels.Domain, Version = NativeKernels.OpsetVersion });
        return rewritten;
    }

    /// <summary>Whether <paramref name="node"/> is a com.microsoft MatMulNBits our kernel computes (see the class summary).</summary>
    private static bool Qualifies(NodeProto node, IReadOnlyDictionary<string, TensorProto> initializers, IReadOnlyDictionary<string, int> declaredTypes)
    {
        if (node.OpType != MatMulNBits || node.Domain != GraphBuilder.MicrosoftDomain) return false;
        int inputs = node.Input.Count;
        while (inputs > 0 && node.Input[inputs - 1].Length == 0) inputs--;
        if (inputs != 3) return false;
        if (node.Attribute.Any(a => !KnownAttributes.Contains(a.Name))) return false;
        if (Int(node, "K") is not { } k || Int(node, "N") is not { } n || k <= 0 || n <= 0) return false;
        if (Int(node, "bits") is not (4 or 8) || Int(node, "block_size") != BlockSize || Int(node, "accuracy_level") != AccuracyLevel) return false;
        long bits = Int(node, "bits")!.Value, blocks = (k + BlockSize - 1) / BlockSize;
        if (declaredTypes.TryGetValue(node.Input[0], out int aType) && aType != (int)ElementType.Float) return false;
        if (!initializers.TryGetValue(node.Input[1], out var b) || b.DataType != (int)ElementType.UInt8
            || !b.Dims.SequenceEqual([n, blocks, BlockSize * bits / 8])) return false;
        if (!initializers.TryGetValue(node.Input[2], out var scales) || scales.DataType != (int)ElementType.Float) return false;
        return scales.Dims.SequenceEqual([n * blocks]) || scales.Dims.SequenceEqual([n, blocks]);
    }

    private static long? Int(NodeProto node, string name) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { Type: AttributeProto.Types.AttributeType.Int } attribute ? attribute.I : null;
}
