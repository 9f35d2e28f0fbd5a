using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Lowerings;

/// <summary>
/// How one model definition becomes ops. Components describe the math and ask the lowering for the
/// blocks whose ops differ: <see cref="PortableLowering"/> spells them in standard ai.onnx ops,
/// <see cref="OrtLowering"/> uses ONNX Runtime's fused com.microsoft ops.
/// </summary>
public abstract class GraphLowering
{
    public static GraphLowering For(Lowering lowering) => lowering == Modeling.Lowering.Ort ? OrtLowering.Instance : PortableLowering.Instance;

    public abstract Lowering Kind { get; }

    /// <summary>Builds the values every layer reads (masks, rotary tables, GQA lengths) in the model scope, before layer 0.</summary>
    public abstract void PrepareShared(DecoderGraph g);

    /// <summary>RMSNorm of x [B, S, hidden] with the scale <paramref name="weight"/> (fetched when the op needs it).</summary>
    public abstract Value RmsNorm(DecoderGraph g, Value x, Func<Value> weight, float eps);

    /// <summary>(residual + delta, RMSNorm(residual + delta)).</summary>
    public virtual (Value Sum, Value Normed) ResidualThenRmsNorm(DecoderGraph g, Value residual, Value delta, Func<Value> weight, float eps)
    {
        var sum = g.B.Op("Add", [residual, delta]);
        return (sum, RmsNorm(g, sum, weight, eps));
    }

    /// <summary>Rotary positions, attention and the KV cache of one layer; see <see cref="Attention.Apply"/>.</summary>
    public abstract (Value Context, Value PresentKey, Value PresentValue) Attend(DecoderGraph g, Value q, Value k, Value v, Value pastKey, Value pastValue, AttentionLayer layer);

    /// <summary>Whether <see cref="AttendPacked"/> serves <paramref name="layer"/>: q, k and v from one projection go to
    /// attention as they are, with no rotary or other op between them outside the attention op.</summary>
    public virtual bool TakesPackedQkv(DecoderGraph g, AttentionLayer layer) => false;

    /// <summary>Attention over packed qkv [B, S, (heads + 2 kv_heads) head_dim] (projected, not yet rotated); see
    /// <see cref="Attend"/>. Only where <see cref="TakesPackedQkv"/> says so.</summary>
    public virtual (Value Context, Value PresentKey, Value PresentValue) AttendPacked(DecoderGraph g, Value qkv, Value pastKey, Value pastValue, AttentionLayer layer) =>
        throw new NotSupportedException($"the {Kind} lowering takes q, k and v apart");

    /// <summary>The quantized weights' layout and projection op.</summary>
    public abstract QuantizedProjections QuantizedProjections(DecoderGraph g, QuantizationOptions options);

    /// <summary>The whole mixture-of-experts block as one fused op, or null where experts are spelled out.</summary>
    public virtual Value? FusedMoe(DecoderGraph g, Value tokens, Value routerLogits, MoeWeightNames names) => null;

    /// <summary>Stacked SwiGLU experts with biases (GPT-OSS) as one fused op, or null where they are spelled out.</summary>
    public virtual Value? FusedMoe(DecoderGraph g, Value tokens, Value routerLogits, StackedSwigluExperts experts) => null;

    /// <summary>Metadata the runtime needs to run graphs of this lowering.</summary>
    public virtual void WriteMetadata(GraphBuilder b) { }
}
