using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>Which rotary a layer applies to q and k: the config's, the local one of sliding layers
/// (<see cref="DecoderConfig.LocalRopeTheta"/>), or none.</summary>
public enum LayerRotary { Config, Local, None }

/// <summary>What sets one layer's attention apart: its sliding window (null: none), the score scale and the soft-cap.</summary>
/// <remarks><paramref name="Sinks"/>: GPT-OSS's learned logit per query head [heads], which joins each softmax's
/// denominator only (p_j = exp(s_j) / (exp(sink) + sum exp(s))); null: none.</remarks>
public sealed record AttentionLayer(int? SlidingWindow, float Scale, float? SoftCap, Value? Sinks = null)
{
    /// <summary>The rotary this layer applies (the config's unless the config says otherwise for it).</summary>
    public LayerRotary Rotary { get; init; }

    /// <summary>Layer <paramref name="layer"/> of <paramref name="c"/>: the config's window on the layers it
    /// names (every layer unless <see cref="DecoderConfig.SlidingLayers"/> says which), scale 1/sqrt(head_dim)
    /// unless the config gives one; no rotary on layers <see cref="DecoderConfig.RotaryLayers"/> leaves out, the
    /// local rotary on sliding layers when the config has one.</summary>
    public static AttentionLayer Of(DecoderConfig c, int layer)
    {
        int? window = c.SlidingLayers is { } sliding && !sliding[layer] ? null : c.SlidingWindow;
        return new(window, (float)(c.AttentionScale ?? 1 / Math.Sqrt(c.HeadDim)), c.AttentionSoftcap is { } cap ? (float)cap : null)
        {
            Rotary = c.RotaryLayers is { } rotary && !rotary[layer] ? LayerRotary.None
                : c.LocalRopeTheta is not null && window is not null ? LayerRotary.Local
                : LayerRotary.Config,
        };
    }
}

/// <summary>
/// Causal self-attention over past + current keys: MHA, GQA and MQA (kv heads dividing query
/// heads), optional sliding window and soft-capping, left-padded batches through attention_mask.
/// How it becomes ops is the lowering's choice (<see cref="Lowerings.GraphLowering.Attend"/>):
/// standard ops, or GroupQueryAttention whose past and present may share one preallocated buffer.
/// </summary>
public static class Attention
{
    /// <summary>
    /// Self-attention of one layer. q [B, S, heads*head_dim], k and v [B, S, kv_heads*head_dim]
    /// (projected, not yet rotated); past key/value [B, kv_heads, P, head_dim].
    /// Returns the context [B, S, heads*head_dim] (before o_proj) and present key/value.
    /// </summary>
    public static (Value Context, Value PresentKey, Value PresentValue) Apply(DecoderGraph g, Value q, Value k, Value v, Value pastKey, Value pastValue, AttentionLayer layer) =>
        g.Lowering.Attend(g, q, k, v, pastKey, pastValue, layer);
}
