using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>
/// The masks of the layers that share one sliding window (or none), each built once, in the scope
/// of its first use: which keys a query sees, as a bool tensor, and as an additive float32 bias.
/// </summary>
public sealed class AttentionMasks(DecoderGraph g, int? window)
{
    private Value? _allowed, _bias;

    public int? Window { get; } = window;
    /// <summary>[B, 1, 1, S, T] bool.</summary>
    public Value Allowed => _allowed ??= AttentionMask.Allowed(g, Window);
    /// <summary>[B, 1, 1, S, T] float32: 0 where allowed, the lowest float elsewhere.</summary>
    public Value Bias => _bias ??= AttentionMask.Bias(g, this);
}

/// <summary>The builders of the masks and of GroupQueryAttention's per-row lengths.</summary>
public static class AttentionMask
{
    /// <summary>
    /// Which keys each query sees [B, 1, 1, S, T] (bool): query i (at absolute position T - S + i)
    /// sees key j when j &lt;= T - S + i (causal), its attention_mask entry is 1 (not left padding),
    /// and, with a sliding window W, T - S + i - j &lt; W.
    /// </summary>
    internal static Value Allowed(DecoderGraph g, int? slidingWindow)
    {
        var b = g.B;
        using var scope = b.Scope("attn_mask");
        var scalarShape = b.Int64s();
        var total = b.Op("Reshape", [g.Dim(g.AttentionMask, 1), scalarShape]);                 // T
        var current = b.Op("Reshape", [g.Dim(g.InputIds, 1), scalarShape]);                   // S
        var queryPositions = b.Op("Range", [b.Op("Sub", [total, current]), total, b.Int64Scalar(1)]); // [S]
        var keyPositions = b.Op("Range", [b.Int64Scalar(0), total, b.Int64Scalar(1)]);                // [T]
        var queryColumn = b.Op("Unsqueeze", [queryPositions, b.Int64s(1)]);                   // [S, 1]
        var keyRow = b.Op("Unsqueeze", [keyPositions, b.Int64s(0)]);                          // [1, T]
        var visible = b.Op("LessOrEqual", [keyRow, queryColumn]);                             // [S, T]
        if (slidingWindow is { } window)
            visible = b.Op("And", [visible, b.Op("Less", [b.Op("Sub", [queryColumn, keyRow]), b.Int64Scalar(window)])]);
        var notPadding = b.Op("Cast", [b.Op("Unsqueeze", [g.AttentionMask, b.Int64s(1, 2, 3)])], Attr.Int("to", (int)ElementType.Bool)); // [B, 1, 1, 1, T]
        return b.Op("And", [visible, notPadding]);                                            // [B, 1, 1, S, T]
    }

    /// <summary>The additive float32 mask [B, 1, 1, S, T]: 0 where allowed, the lowest float elsewhere.</summary>
    internal static Value Bias(DecoderGraph g, AttentionMasks masks)
    {
        var allowed = masks.Allowed;
        using var scope = g.B.Scope("attn_mask");
        return g.B.Op("Where", [allowed, g.B.FloatScalar(0), g.B.FloatScalar(float.MinValue)]);
    }

    /// <summary>
    /// GroupQueryAttention's seqlens_k (int32 [B]) and total_sequence_length (int32 scalar). GQA reads
    /// seqlens_k[b] as the index of row b's last key (where a shared KV buffer writes its new token)
    /// and attends keys 0..seqlens_k[b]. We give it the last column whose attention_mask is 1:
    /// T - 1 for left-padded rows (padding then masked through attention_bias), and length - 1 for
    /// rows whose tokens start at column 0 and end early, so rows of different lengths decode in
    /// one batch, each over its own keys (<see cref="GraphContract.Metadata.GqaSeqlensK"/> marks graphs built so).
    /// </summary>
    internal static (Value SeqlensK, Value TotalLength) GqaLengths(DecoderGraph g)
    {
        var b = g.B;
        using var scope = b.Scope("attn_mask");
        var total = g.Dim(g.AttentionMask, 1);                                                          // [1] = T
        var columns = b.Op("Range", [b.Int64Scalar(0), b.Op("Reshape", [total, b.Int64s()]), b.Int64Scalar(1)]); // [T]
        var lastAttended = g.Reduce("ReduceMax", b.Op("Mul", [g.AttentionMask, columns]), [1], keepDims: false);       // [B]
        var seqlensK = b.Op("Cast", [lastAttended], Attr.Int("to", (int)ElementType.Int32));           // [B]
        var totalLength = b.Op("Cast", [b.Op("Reshape", [total, b.Int64s()])], Attr.Int("to", (int)ElementType.Int32)); // scalar
        return (seqlensK, totalLength);
    }

    /// <summary>
    /// GroupQueryAttention's attention_bias [B, 1, S, T] in the activation type: 0 where attention_mask is 1, the lowest
    /// finite value over padding (float16's lowest, not -infinity). Causality and the sliding window are GQA's own
    /// (keys up to each query's column, local_window_size), so the bias carries padding only and one serves every layer:
    ///   attention_mask [B, T] ─Unsqueeze─ [B, 1, 1, T] ─Cast bool─ Where(0, lowest) ─Expand [1, 1, S, 1]─ [B, 1, S, T]
    /// </summary>
    internal static Value GqaPaddingBias(DecoderGraph g)
    {
        var b = g.B;
        using var scope = b.Scope("attn_mask");
        var notPadding = b.Op("Cast", [b.Op("Unsqueeze", [g.AttentionMask, b.Int64s(1, 2)])], Attr.Int("to", (int)ElementType.Bool)); // [B, 1, 1, T]
        var bias = b.Op("Where", [notPadding, g.Scalar(0), g.Scalar(g.Float16 ? (float)Half.MinValue : float.MinValue)]);          // [B, 1, 1, T]
        var queries = b.Op("Concat", [b.Int64s(1, 1), g.Dim(g.InputIds, 1), b.Int64s(1)], Attr.Int("axis", 0));                   // [1, 1, S, 1]
        return b.Op("Expand", [bias, queries]);                                                                                   // [B, 1, S, T]
    }
}
