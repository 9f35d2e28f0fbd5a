using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>
/// Projections that read one input fused into one matmul (q/k/v, gate/up): the Linear weights [N_i, K] concatenated along
/// their output rows into [sum N_i, K], so that one MatMul (or MatMulNBits) replaces several and fewer, larger nodes run.
/// Quantization blocks run along K within one output row, so quantizing the concatenation gives exactly the blocks of
/// the parts, one after another (QuantizedWeight rows are independent); stored blocks (GGUF) are carried part by part.
/// </summary>
public static class FusedProjections
{
    /// <summary>The fused weight's name: <paramref name="first"/> with its projection's name (e.g. q_proj) replaced by
    /// <paramref name="fusedProjection"/> (qkv_proj), or the names of the parts joined where the pattern does not hold.</summary>
    public static string Name(string first, string projection, string fusedProjection, IReadOnlyList<string> parts)
    {
        string marker = "." + projection + ".";
        int at = first.LastIndexOf(marker, StringComparison.Ordinal);
        return at >= 0 ? first[..at] + "." + fusedProjection + "." + first[(at + marker.Length)..] : string.Join("+", parts);
    }

    /// <summary>x [.., K] through the row-concatenated Linear weights <paramref name="parts"/>: [.., sum N_i].</summary>
    public static Value Project(DecoderGraph g, Value x, string fusedName, IReadOnlyList<string> parts)
    {
        g.FusedWeights.Define(fusedName, parts);
        return g.Project(x, fusedName);
    }

    /// <summary>The row-concatenated 1-D biases of <paramref name="parts"/> [sum N_i], one Add for the fused projection.</summary>
    public static Value Bias(DecoderGraph g, string fusedName, IReadOnlyList<string> parts)
    {
        g.FusedWeights.Define(fusedName, parts);
        return g.Weight(fusedName);
    }

    /// <summary>y [.., sum widths] split along its last axis into parts of <paramref name="widths"/>.</summary>
    public static IReadOnlyList<Value> Split(DecoderGraph g, Value y, params long[] widths) =>
        g.B.Node(GraphBuilder.DefaultDomain, "Split", [y, g.B.Int64s(widths)], widths.Length, Attr.Int("axis", -1));
}

/// <summary>
/// The checkpoint's weights plus fused ones defined while the graph is built: a fused name reads its parts concatenated
/// along axis 0 (Linear rows, or 1-D biases). Quantized parts the checkpoint stores in MatMulNBits form stay carried when
/// every part is carried.
/// </summary>
public sealed class FusedWeightSource(IWeightSource inner) : IQuantizedWeightSource
{
    private readonly Dictionary<string, IReadOnlyList<string>> _fused = new(StringComparer.Ordinal);

    public IReadOnlyCollection<string> Names => inner.Names;

    /// <summary>Makes <paramref name="name"/> read <paramref name="parts"/> concatenated along axis 0.</summary>
    public void Define(string name, IReadOnlyList<string> parts)
    {
        if (_fused.TryGetValue(name, out var known))
        {
            if (!known.SequenceEqual(parts)) throw new InvalidOperationException($"fused weight '{name}' is defined twice with different parts");
            return;
        }
        if (inner.Names.Contains(name)) throw new InvalidOperationException($"fused weight '{name}' would hide the checkpoint tensor of that name");
        _fused[name] = [.. parts];
    }

    public ITensorSource Get(string name) =>
        _fused.TryGetValue(name, out var parts) ? TensorTransforms.ConcatRows([.. parts.Select(inner.Get)]) : inner.Get(name);

    public CarriedWeight? TryCarry(string name, QuantizationOptions options)
    {
        if (inner is not IQuantizedWeightSource native) return null;
        if (!_fused.TryGetValue(name, out var parts)) return native.TryCarry(name, options);
        var carried = new List<CarriedWeight>(parts.Count);
        foreach (var part in parts)
        {
            if (native.TryCarry(part, options) is not { } one || (carried.Count > 0 && one.K != carried[0].K)) return null;
            carried.Add(one);
        }
        int n = checked(carried.Sum(c => c.N));
        return new CarriedWeight(n, carried[0].K, () => ConcatRows([.. carried.Select(c => c.Load())]));
    }

    /// <summary>Quantized weights of one K stacked along N: their rows' blocks, scales and zero points one after another.</summary>
    public static QuantizedWeight ConcatRows(IReadOnlyList<QuantizedWeight> parts)
    {
        var first = parts[0];
        if (parts.Any(p => p.K != first.K || p.Bits != first.Bits || p.BlockSize != first.BlockSize || (p.ZeroPoints is null) != (first.ZeroPoints is null)))
            throw new ArgumentException("fused quantized weights must share K, bits, block size and symmetry");
        return new QuantizedWeight(parts.Sum(p => p.N), first.K, first.Bits, first.BlockSize,
            [.. parts.SelectMany(p => p.Packed)], [.. parts.SelectMany(p => p.Scales)],
            first.ZeroPoints is null ? null : [.. parts.SelectMany(p => p.ZeroPoints!)]);
    }
}
