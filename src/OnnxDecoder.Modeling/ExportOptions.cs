namespace OnnxDecoder.Modeling;

/// <summary>How one model definition is lowered to ONNX ops.</summary>
public enum Lowering
{
    /// <summary>Standard ai.onnx ops only, opset 17: runs on every execution provider.</summary>
    Portable,
    /// <summary>ONNX Runtime's com.microsoft fused ops (GroupQueryAttention, RotaryEmbedding,
    /// SimplifiedLayerNormalization, MoE): fastest on CPU and CUDA.</summary>
    Ort,
}

public enum ExecutionTarget { Cpu, Cuda, DirectML }

/// <summary>How an embedding is pooled from the hidden states of one sequence.</summary>
public enum EmbeddingPooling
{
    /// <summary>The last real token (decoder embedding models such as Qwen3-Embedding).</summary>
    Last,
    /// <summary>The mean over real tokens (attention-mask weighted).</summary>
    Mean,
    /// <summary>The first real token.</summary>
    Cls,
}

public sealed record ExportOptions
{
    public Lowering Lowering { get; init; } = Lowering.Portable;

    /// <summary>Emit logits for the last position only: a prefill of S tokens returns [B, 1, V].</summary>
    public bool LastTokenLogitsOnly { get; init; }

    /// <summary>MoE models: add router_logits.{i} outputs [B*S, experts] for debugging (portable lowering).</summary>
    public bool RouterLogitsOutputs { get; init; }

    /// <summary>Add the final-normed hidden states [B, S, hidden] as the output hidden_states, with embedding
    /// pooling and L2 normalisation metadata, so the runtime can serve embeddings.</summary>
    public bool HiddenStatesOutput { get; init; }

    /// <summary>The pooling written to the metadata with <see cref="HiddenStatesOutput"/>.</summary>
    public EmbeddingPooling Pooling { get; init; } = EmbeddingPooling.Last;

    /// <summary>Longest sequence (prompt + generated) the export serves; defaults to the model's context.</summary>
    public int? MaxLength { get; init; }

    /// <summary>The execution provider the export is meant for; combinations that cannot run are refused.</summary>
    public ExecutionTarget Target { get; init; } = ExecutionTarget.Cpu;

    /// <summary>Weight quantization (int8/int4); null keeps float weights.</summary>
    public Quantization.QuantizationOptions? Quantization { get; init; }

    /// <summary>float16 activations, KV cache and logits (norms and softmax computed in float32), and
    /// float16 for every weight that is not quantized (and for quantization scales); for CUDA and DirectML.</summary>
    public bool Float16 { get; init; }

    /// <summary>"fp32", "fp16", "int8", "int4", or "int8-fp16"/"int4-fp16" (quantized weights, float16 activations).</summary>
    public string Precision => Quantization is not null ? $"int{Quantization.Bits}{(Float16 ? "-fp16" : "")}" : Float16 ? "fp16" : "fp32";

    /// <summary>Extra metadata_props (source, checksum); family, lowering and precision are always written.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();
}

/// <summary>Which lowering runs on which execution provider, and why (README holds the same table).</summary>
public static class LoweringSupport
{
    /// <summary>Null when the combination runs; otherwise the reason and the alternative.</summary>
    public static string? WhyNot(DecoderConfig config, Lowering lowering, ExecutionTarget target, Quantization.QuantizationOptions? quantization = null, bool float16 = false)
    {
        if (lowering == Lowering.Portable) return null;
        if (target == ExecutionTarget.DirectML)
        {
            if (config.IsMoe) return "the com.microsoft MoE op has no DirectML kernel: export with --lowering portable for DirectML";
            return "the ort lowering's com.microsoft RotaryEmbedding and GroupQueryAttention are not verified on DirectML here: export with --lowering portable for DirectML";
        }
        return null;
    }

    public static void ThrowIfUnsupported(DecoderConfig config, Lowering lowering, ExecutionTarget target, Quantization.QuantizationOptions? quantization = null, bool float16 = false)
    {
        if (WhyNot(config, lowering, target, quantization, float16) is { } reason)
            throw new NotSupportedException($"lowering '{lowering.ToString().ToLowerInvariant()}' on {target}: {reason}");
    }
}
