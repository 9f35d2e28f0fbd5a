using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>
/// Causal self-attention over past + current keys: MHA, GQA and MQA (kv heads dividing query
/// heads), optional sliding window, left-padded batches through attention_mask. The portable
/// lowering spells it out in standard ops; the ort lowering uses GroupQueryAttention, whose past
/// and present may share one preallocated buffer.
/// </summary>
public static class Attention
{
    /// <summary>Builds what all layers share (mask bias, rotary tables, GQA lengths) in the current scope.</summary>
    public static void PrepareShared(DecoderGraph g)
    {
        if (g.Config.Positions == PositionKind.Rotary && !(g.Ort && !Rotary.IsDynamic(g.Config))) Rotary.ApplyPortableTables(g);
        if (g.Ort) { _ = GqaLengths(g); _ = PaddingBias(g); }
        else _ = MaskBias(g);
    }

    /// <summary>
    /// Self-attention of one layer. q [B, S, heads*head_dim], k and v [B, S, kv_heads*head_dim]
    /// (projected, not yet rotated); past key/value [B, kv_heads, P, head_dim].
    /// Returns the context [B, S, heads*head_dim] (before o_proj) and present key/value.
    /// </summary>
    public static (Value Context, Value PresentKey, Value PresentValue) Apply(DecoderGraph g, Value q, Value k, Value v, Value pastKey, Value pastValue)
    {
        var c = g.Config;
        var b = g.B;
        bool rotary = c.Positions == PositionKind.Rotary;

        if (g.Ort)
        {
            if (rotary && !Rotary.IsDynamic(c))
            {
                using (b.Scope("q_rotary")) q = Rotary.ApplyOrt(g, q, c.NumHeads);
                using (b.Scope("k_rotary")) k = Rotary.ApplyOrt(g, k, c.NumKvHeads);
            }
            else if (rotary)
            {
                using (b.Scope("q_rotary")) q = b.Op("Reshape", [Rotary.ApplyPortable(g, b.Op("Reshape", [q, b.Int64s(0, 0, c.NumHeads, c.HeadDim)])), b.Int64s(0, 0, -1)]);
                using (b.Scope("k_rotary")) k = b.Op("Reshape", [Rotary.ApplyPortable(g, b.Op("Reshape", [k, b.Int64s(0, 0, c.NumKvHeads, c.HeadDim)])), b.Int64s(0, 0, -1)]);
            }
            var (seqlensK, totalLength) = GqaLengths(g);
            var attributes = new List<Attr>
            {
                Attr.Int("num_heads", c.NumHeads),
                Attr.Int("kv_num_heads", c.NumKvHeads),
                Attr.Float("scale", (float)(1 / Math.Sqrt(c.HeadDim))),
            };
            if (c.SlidingWindow is { } window) attributes.Add(Attr.Int("local_window_size", window));
            // Inputs 7-9 (cos/sin caches, position_ids) serve GQA's own rotary, which we do not use;
            // input 10, attention_bias [B, 1, S, T], carries left padding (see GqaLengths).
            // outputs: context [B, S, heads*head_dim], present key, present value [B, kv_heads, T or max, head_dim]
            var outputs = b.Node(GraphBuilder.MicrosoftDomain, "GroupQueryAttention",
                [q, k, v, pastKey, pastValue, seqlensK, totalLength, null, null, null, PaddingBias(g)], 3, [.. attributes]);
            return (outputs[0], outputs[1], outputs[2]);
        }

        int groups = c.QueriesPerKvHead;
        var q4 = b.Op("Reshape", [q, b.Int64s(0, 0, c.NumHeads, c.HeadDim)]);     // [B, S, heads, head_dim]
        var k4 = b.Op("Reshape", [k, b.Int64s(0, 0, c.NumKvHeads, c.HeadDim)]);   // [B, S, kv_heads, head_dim]
        var v4 = b.Op("Reshape", [v, b.Int64s(0, 0, c.NumKvHeads, c.HeadDim)]);
        if (rotary)
        {
            using (b.Scope("q_rotary")) q4 = Rotary.ApplyPortable(g, q4);
            using (b.Scope("k_rotary")) k4 = Rotary.ApplyPortable(g, k4);
        }
        var perm = Attr.Ints("perm", 0, 2, 1, 3);
        var qHeads = b.Op("Transpose", [q4], perm);                                // [B, heads, S, head_dim]
        var presentKey = b.Op("Concat", [pastKey, b.Op("Transpose", [k4], perm)], Attr.Int("axis", 2));     // [B, kv_heads, T, head_dim]
        var presentValue = b.Op("Concat", [pastValue, b.Op("Transpose", [v4], perm)], Attr.Int("axis", 2)); // [B, kv_heads, T, head_dim]

        // Group the query heads that share a kv head instead of repeating k and v:
        //   q [B, kv_heads, groups, S, head_dim] x k^T [B, kv_heads, 1, head_dim, T] -> [B, kv_heads, groups, S, T]
        var qGrouped = b.Op("Reshape", [qHeads, b.Int64s(0, c.NumKvHeads, groups, -1, c.HeadDim)]);
        var keys = b.Op("Unsqueeze", [presentKey, b.Int64s(2)]);                                          // [B, kv_heads, 1, T, head_dim]
        var values = b.Op("Unsqueeze", [presentValue, b.Int64s(2)]);
        var scores = b.Op("MatMul", [qGrouped, b.Op("Transpose", [keys], Attr.Ints("perm", 0, 1, 2, 4, 3))]);
        // Scale, mask and softmax in float32 (float16 scores are cast in, probabilities cast back).
        scores = b.Op("Add", [b.Op("Mul", [g.ToFloat32(scores), b.FloatScalar((float)(1 / Math.Sqrt(c.HeadDim)))]), MaskBias(g)]);
        var probabilities = g.FromFloat32(b.Op("Softmax", [scores], Attr.Int("axis", -1)));             // [B, kv_heads, groups, S, T]
        var context = b.Op("MatMul", [probabilities, values]);                                            // [B, kv_heads, groups, S, head_dim]
        context = b.Op("Reshape", [context, b.Int64s(0, c.NumHeads, -1, c.HeadDim)]);                    // [B, heads, S, head_dim]
        context = b.Op("Transpose", [context], perm);                                                     // [B, S, heads, head_dim]
        return (b.Op("Reshape", [context, b.Int64s(0, 0, c.NumHeads * c.HeadDim)]), presentKey, presentValue);
    }

    /// <summary>
    /// Which keys each query sees [B, 1, 1, S, T] (bool): query i (at absolute position T - S + i)
    /// sees key j when j &lt;= T - S + i (causal), its attention_mask entry is 1 (not left padding),
    /// and, with a sliding window W, T - S + i - j &lt; W.
    /// </summary>
    private static Value MaskAllowed(DecoderGraph g) => g.Shared("mask_allowed", () =>
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
        if (g.Config.SlidingWindow is { } window)
            visible = b.Op("And", [visible, b.Op("Less", [b.Op("Sub", [queryColumn, keyRow]), b.Int64Scalar(window)])]);
        var notPadding = b.Op("Cast", [b.Op("Unsqueeze", [g.AttentionMask, b.Int64s(1, 2, 3)])], Attr.Int("to", (int)ElementType.Bool)); // [B, 1, 1, 1, T]
        return b.Op("And", [visible, notPadding]);                                            // [B, 1, 1, S, T]
    });

    /// <summary>The additive float32 mask [B, 1, 1, S, T]: 0 where allowed, the lowest float elsewhere.</summary>
    private static Value MaskBias(DecoderGraph g) => g.Shared("mask_bias", () =>
    {
        var allowed = MaskAllowed(g);
        using var scope = g.B.Scope("attn_mask");
        return g.B.Op("Where", [allowed, g.B.FloatScalar(0), g.B.FloatScalar(float.MinValue)]);
    });

    /// <summary>
    /// GroupQueryAttention's seqlens_k (int32 [B]) and total_sequence_length (int32 scalar). GQA reads
    /// seqlens_k[b] as the index of row b's last key (where a shared KV buffer writes its new token)
    /// and attends keys 0..seqlens_k[b]. We give it the last column whose attention_mask is 1:
    /// T - 1 for left-padded rows (padding then masked through attention_bias), and length - 1 for
    /// rows whose tokens start at column 0 and end early, so rows of different lengths decode in
    /// one batch, each over its own keys (<see cref="SeqlensKMetadata"/> marks graphs built so).
    /// </summary>
    private static (Value SeqlensK, Value TotalLength) GqaLengths(DecoderGraph g) => g.Shared("gqa_lengths", () =>
    {
        var b = g.B;
        using var scope = b.Scope("attn_mask");
        var total = g.Dim(g.AttentionMask, 1);                                                          // [1] = T
        var columns = b.Op("Range", [b.Int64Scalar(0), b.Op("Reshape", [total, b.Int64s()]), b.Int64Scalar(1)]); // [T]
        var lastAttended = g.Reduce("ReduceMax", b.Op("Mul", [g.AttentionMask, columns]), [1], keepDims: false);       // [B]
        var seqlensK = b.Op("Cast", [lastAttended], Attr.Int("to", (int)ElementType.Int32));           // [B]
        var totalLength = b.Op("Cast", [b.Op("Reshape", [total, b.Int64s()])], Attr.Int("to", (int)ElementType.Int32)); // scalar
        return (seqlensK, totalLength);
    });

    /// <summary>Metadata key (value "last_attended_column") of graphs whose GQA lengths come per row from the mask.</summary>
    public const string SeqlensKMetadata = "onnxdecoder.gqa_seqlens_k";

    /// <summary>The additive mask as GQA's attention_bias [B, 1, S, T] (padding, causality, window).</summary>
    private static Value PaddingBias(DecoderGraph g) => g.Shared("gqa_bias", () =>
    {
        // GQA takes the bias in the activation type: float16's lowest finite value, not -infinity.
        var bias = g.Float16 ? g.B.Op("Where", [MaskAllowed(g), g.Scalar(0), g.Scalar((float)Half.MinValue)]) : MaskBias(g);
        using var scope = g.B.Scope("attn_mask");
        return g.B.Op("Squeeze", [bias, g.B.Int64s(1)]);
    });
}
