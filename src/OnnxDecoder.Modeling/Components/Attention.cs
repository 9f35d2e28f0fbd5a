using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>
/// Causal self-attention over past + current keys: MHA, GQA and MQA (kv heads dividing query
/// heads), optional sliding window, left-padded batches through attention_mask. How it becomes ops
/// is the lowering's choice (<see cref="Lowerings.GraphLowering.Attend"/>): standard ops, or
/// GroupQueryAttention whose past and present may share one preallocated buffer.
/// </summary>
public static class Attention
{
    /// <summary>
    /// Self-attention of one layer. q [B, S, heads*head_dim], k and v [B, S, kv_heads*head_dim]
    /// (projected, not yet rotated); past key/value [B, kv_heads, P, head_dim].
    /// Returns the context [B, S, heads*head_dim] (before o_proj) and present key/value.
    /// </summary>
    public static (Value Context, Value PresentKey, Value PresentValue) Apply(DecoderGraph g, Value q, Value k, Value v, Value pastKey, Value pastValue) =>
        g.Lowering.Attend(g, q, k, v, pastKey, pastValue);

    /// <summary>The softmax scale 1/sqrt(head_dim).</summary>
    public static float Scale(DecoderConfig c) => (float)(1 / Math.Sqrt(c.HeadDim));
}
