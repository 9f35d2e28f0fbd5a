using Google.Protobuf;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Runtime;

/// <summary>What our CPU kernels ran in a loaded model: how many fused nodes, how many MatMulNBits nodes and on which ISA,
/// or why no MatMulNBits node moved.</summary>
/// <param name="Nodes">MatMulNBits nodes moved to <see cref="NativeKernels.Domain"/> (0: ONNX Runtime's own kernels ran).</param>
/// <param name="Isa">The ISA the library's auto dispatch picks ("avx512bw", "avx2", "scalar"); null when none of our ops runs.</param>
/// <param name="Reason">Why no MatMulNBits node moved ("" when some did).</param>
/// <param name="FusedNodes">Nodes of our fused ops (<see cref="NativeFusionGraph"/>) in place of the patterns they replace.</param>
public sealed record NativeKernelsUse(int Nodes, string? Isa, string Reason, int FusedNodes = 0)
{
    public bool Active => Nodes > 0 || FusedNodes > 0;

    public override string ToString() =>
        (Nodes > 0 ? $"{Nodes} MatMulNBits nodes on our {Isa} kernels" : $"ONNX Runtime's MatMulNBits ({Reason})")
        + (FusedNodes > 0 ? $"; {FusedNodes} fused nodes (SplitRotaryQkv, SiluMul)" : "");
}

/// <summary>
/// The graph a <see cref="DecoderModel"/> session loads: the file as exported, or the runtime's form of it, read once and
/// rewritten in memory by <see cref="DirectLengthsGraph"/>, <see cref="NativeMatMulGraph"/> and <see cref="NativeFusionGraph"/>
/// as the options say. Model files over <see cref="DirectLengthsGraph.SmallEnough"/>'s limit hold their weights inside the
/// protobuf and load as they are; the rewritten bytes load with external data resolved from the model's folder.
/// </summary>
internal static class RuntimeGraph
{
    /// <param name="Bytes">The rewritten model; null: load the file as it is.</param>
    public sealed record Form(byte[]? Bytes, bool DirectLengths, NativeKernelsUse Native);

    public static Form Read(string modelPath, bool directLengths, bool nativeKernels, bool nativeMatMul, string nativeOffReason)
    {
        string nativeReason = nativeOffReason;
        if (nativeKernels && !NativeKernels.IsAvailable)
        {
            nativeKernels = false;
            nativeReason = NativeKernels.UnavailableReason;
        }
        if (!directLengths && !nativeKernels) return new Form(null, false, new NativeKernelsUse(0, null, nativeReason));
        if (!DirectLengthsGraph.SmallEnough(modelPath, out string reason))
            return new Form(null, false, new NativeKernelsUse(0, null, nativeKernels ? reason : nativeReason));
        ModelProto model;
        try
        {
            using var file = OnnxModelFile.Load(modelPath, new OnnxReadOptions { CheckGraph = false });
            model = file.Model;
        }
        catch (ModelFormatException e)
        {
            // Our reader is stricter than ONNX Runtime's (external data keys, links): a folder from elsewhere that
            // ONNX Runtime accepts still loads, as it is, and ONNX Runtime's own checks judge it.
            return new Form(null, false, new NativeKernelsUse(0, null, nativeKernels ? e.Message : nativeReason));
        }
        bool direct = directLengths && DirectLengthsGraph.Rewrite(model, out _);
        int nodes = nativeKernels && nativeMatMul ? NativeMatMulGraph.Rewrite(model) : 0;
        int fused = nativeKernels ? NativeFusionGraph.Rewrite(model).Total : 0;
        var native = nodes > 0 ? new NativeKernelsUse(nodes, NativeKernels.Isa, "", fused)
            : new NativeKernelsUse(0, fused > 0 ? NativeKernels.Isa : null,
                !nativeKernels ? nativeReason
                : nativeMatMul ? "no MatMulNBits node qualifies (accuracy level 4, block 32, symmetric, float A)" : "NativeMatMul is off", fused);
        return new Form(direct || native.Active ? model.ToByteArray() : null, direct, native);
    }
}
