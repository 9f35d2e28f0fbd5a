using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Lowerings;

/// <summary>
/// ONNX Runtime's fused ops: SimplifiedLayerNormalization and its Skip- sibling, RotaryEmbedding,
/// GroupQueryAttention (past and present share one buffer), MatMulNBits, GatherBlockQuantized, MoE.
/// </summary>
public sealed class OrtLowering : GraphLowering
{
    public static readonly OrtLowering Instance = new();

    public override Lowering Kind => Modeling.Lowering.Ort;

    public override void PrepareShared(DecoderGraph g)
    {
        // RotaryEmbedding reads the caches itself; only the dynamic scaling's in-graph tables are shared up front.
        if (g.Config.Positions == PositionKind.Rotary && Rotary.IsDynamic(g.Config)) _ = g.RotaryPerPosition;
        _ = g.GqaLengths;
        _ = g.GqaPaddingBias;
    }

    // ONNX Runtime registers SimplifiedLayerNormalization in the default domain (since version 1),
    // unlike its Skip- sibling, which lives in com.microsoft.
    public override Value RmsNorm(DecoderGraph g, Value x, Func<Value> weight, float eps) =>
        g.B.Op("SimplifiedLayerNormalization", [x, weight()], Attr.Int("axis", -1), Attr.Float("epsilon", eps));

    public override (Value Sum, Value Normed) ResidualThenRmsNorm(DecoderGraph g, Value residual, Value delta, Func<Value> weight, float eps)
    {
        // outputs: normalised, mean (unused), inverse std (unused), input + skip
        var outputs = g.B.Node(GraphBuilder.MicrosoftDomain, "SkipSimplifiedLayerNormalization", [residual, delta, weight()], 4, Attr.Float("epsilon", eps));
        return (outputs[3], outputs[0]);
    }

    /// <summary>
    /// Whether GroupQueryAttention rotates q and k of <paramref name="layer"/> itself (do_rotary=1): a static scaling (the
    /// dynamic one's tables depend on the call), and head and rotary sizes its CPU kernel takes (ONNX Runtime 1.31.1:
    /// head_dim a multiple of 16, cos/sin caches [max_length, rot/2] with rot/2 a multiple of 8). Elsewhere
    /// RotaryEmbedding nodes (or standard ops) rotate before it.
    /// </summary>
    public static bool GqaRotates(DecoderConfig c, AttentionLayer layer) =>
        Rotates(c, layer) && (layer.Rotary == LayerRotary.Local || !Rotary.IsDynamic(c))
        && c.HeadDim % 16 == 0 && c.RotaryDim % 16 == 0 && c.RotaryDim <= c.HeadDim;

    // Layers without rotary (SmolLM3's NoPE layers) pass q and k on as projected.
    private static bool Rotates(DecoderConfig c, AttentionLayer layer) => c.Positions == PositionKind.Rotary && layer.Rotary != LayerRotary.None;

    public override bool TakesPackedQkv(DecoderGraph g, AttentionLayer layer) => !Rotates(g.Config, layer) || GqaRotates(g.Config, layer);

    public override (Value Context, Value PresentKey, Value PresentValue) Attend(DecoderGraph g, Value q, Value k, Value v, Value pastKey, Value pastValue, AttentionLayer layer)
    {
        var c = g.Config;
        var b = g.B;
        // Each rotary (the config's, or the local one of sliding layers) is its own RotaryEmbedding over its own caches.
        bool local = layer.Rotary == LayerRotary.Local;
        if (Rotates(c, layer) && !GqaRotates(c, layer))
        {
            if (local || !Rotary.IsDynamic(c))
            {
                using (b.Scope("q_rotary")) q = Rotary.ApplyOrt(g, q, c.NumHeads, local);
                using (b.Scope("k_rotary")) k = Rotary.ApplyOrt(g, k, c.NumKvHeads, local);
            }
            else
            {
                // The dynamic (NTK) scaling's tables depend on the call's longest position: rotate in standard ops.
                using (b.Scope("q_rotary")) q = b.Op("Reshape", [Rotary.ApplyPortable(g, b.Op("Reshape", [q, b.Int64s(0, 0, c.NumHeads, c.HeadDim)])), b.Int64s(0, 0, -1)]);
                using (b.Scope("k_rotary")) k = b.Op("Reshape", [Rotary.ApplyPortable(g, b.Op("Reshape", [k, b.Int64s(0, 0, c.NumKvHeads, c.HeadDim)])), b.Int64s(0, 0, -1)]);
            }
        }
        return GroupQueryAttention(g, q, k, v, pastKey, pastValue, layer);
    }

    //   qkv [B, S, (h + 2 kv) hd] ─GroupQueryAttention(key, value empty; rotary inside where GqaRotates)─ context
    public override (Value Context, Value PresentKey, Value PresentValue) AttendPacked(DecoderGraph g, Value qkv, Value pastKey, Value pastValue, AttentionLayer layer)
    {
        if (!TakesPackedQkv(g, layer)) throw new InvalidOperationException("this layer's rotary runs outside GroupQueryAttention: pass q, k and v apart");
        return GroupQueryAttention(g, qkv, null, null, pastKey, pastValue, layer);
    }

    private static (Value Context, Value PresentKey, Value PresentValue) GroupQueryAttention(DecoderGraph g, Value q, Value? k, Value? v, Value pastKey, Value pastValue, AttentionLayer layer)
    {
        var c = g.Config;
        var (seqlensK, totalLength) = g.GqaLengths;
        var attributes = new List<Attr>
        {
            Attr.Int("num_heads", c.NumHeads),
            Attr.Int("kv_num_heads", c.NumKvHeads),
            Attr.Float("scale", layer.Scale),
        };
        if (layer.SoftCap is { } cap) attributes.Add(Attr.Float("softcap", cap));
        if (layer.SlidingWindow is { } window) attributes.Add(Attr.Int("local_window_size", window));
        Value? cos = null, sin = null;
        if (GqaRotates(c, layer))
        {
            (cos, sin) = layer.Rotary == LayerRotary.Local ? g.LocalRotaryCaches : g.RotaryCaches;
            attributes.Add(Attr.Int("do_rotary", 1));
            attributes.Add(Attr.Int("rotary_interleaved", c.RotaryLayout == RotaryLayout.Interleaved ? 1 : 0));
        }
        // Inputs 7-8: cos/sin caches [max_length, rot/2] for GQA's own rotary. Input 9, position_ids, stays empty: the CPU
        // kernel reads only its first entry on a first prompt (so a left-padded row would rotate at another row's
        // positions), and without it rotates each row's query at its own last column (seqlens_k) and every key at its column.
        // Our KV columns never move, and every row's positions are its columns minus a constant (its left padding), so the
        // rotated scores, which depend only on the distance between query and key, are the ones position_ids would give.
        // Input 10, attention_bias [B, 1, S, T], carries left padding (see AttentionMask.GqaLengths, GqaPaddingBias);
        // input 11, head_sink [heads], adds exp(sink) to each head's softmax denominator.
        // outputs: context [B, S, heads*head_dim], present key, present value [B, kv_heads, T or max, head_dim]
        var bias = g.GqaPaddingBias;
        var outputs = g.B.Node(GraphBuilder.MicrosoftDomain, "GroupQueryAttention",
            layer.Sinks is { } sinks
                ? [q, k, v, pastKey, pastValue, seqlensK, totalLength, cos, sin, null, bias, sinks]
                : [q, k, v, pastKey, pastValue, seqlensK, totalLength, cos, sin, null, bias],
            3, [.. attributes]);
        return (outputs[0], outputs[1], outputs[2]);
    }

    public override QuantizedProjections QuantizedProjections(DecoderGraph g, QuantizationOptions options) => new MatMulNBitsProjections(g, options);

    // The com.microsoft MoE op serves SwiGLU experts (gate and up fused). Its "gelu" activation
    // differs from exact GELU by about 4e-4 on our tests, so other experts are spelled out in
    // standard ops even in the ort lowering; it takes float experts, so quantized experts are
    // spelled out too, where they can use MatMulNBits.
    // com.microsoft MoE: fc1 [experts, 2*intermediate, hidden] with gate and up rows interleaved,
    // fc2 [experts, hidden, intermediate]; the op applies softmax and top-k to the router logits.
    public override Value? FusedMoe(DecoderGraph g, Value tokens, Value routerLogits, MoeWeightNames names)
    {
        var c = g.Config;
        if (names.Gate is null || c.HiddenAct != Activation.Silu || g.Quantized is not null) return null;
        var fc1 = g.DerivedWeight(names.Prefix + ".fc1_experts", () => TensorTransforms.Stack(
            Enumerable.Range(0, c.NumExperts).Select(e => TensorTransforms.InterleaveRows(g.Weights.Get(names.Gate[e]), g.Weights.Get(names.Up[e]))).ToList()));
        var fc2 = g.DerivedWeight(names.Prefix + ".fc2_experts", () => TensorTransforms.Stack(
            Enumerable.Range(0, c.NumExperts).Select(e => g.Weights.Get(names.Down[e])).ToList()));
        var attributes = new List<Attr>
        {
            Attr.Int("k", c.ExpertsPerToken),
            Attr.Int("normalize_routing_weights", c.NormTopKProb ? 1 : 0),
        };
        // swiglu(g, u) = g sigmoid(alpha g) (u + beta): alpha 1 and beta 0 give SiLU(g) u.
        attributes.AddRange([Attr.String("activation_type", "swiglu"), Attr.Int("swiglu_fusion", 1),
            Attr.Float("activation_alpha", 1f), Attr.Float("activation_beta", 0f), Attr.Float("swiglu_limit", float.MaxValue)]);
        using var scope = g.B.Scope("experts");
        return g.B.MsOp("MoE", [tokens, routerLogits, fc1, null, fc2], [.. attributes]);             // [N, hidden]
    }

    /// <summary>
    /// Whether a quantized export carries stacked SwiGLU experts into QMoE (ONNX Runtime 1.31.1 CPU, probed): symmetric blocks,
    /// float32 activations, both expert input widths whole blocks; 4-bit at any accuracy level (computed in fp32, exact against
    /// the dequantized weights), 8-bit only at accuracy level 4, since the CPU kernel quantizes the activations of 8-bit
    /// experts to int8 whatever the level. Otherwise the experts stay float, spelled out in standard ops.
    /// </summary>
    public static bool QmoeCarries(DecoderConfig c, QuantizationOptions q, bool float16) =>
        q.Symmetric && !float16 && c.HiddenSize % q.BlockSize == 0 && c.IntermediateSize % q.BlockSize == 0 && (q.Bits == 4 || q.AccuracyLevel == 4);

    // GPT-OSS-style experts: fc1 [experts, 2*inter, hidden] (gate and up rows interleaved) with bias, fc2 [experts, hidden, inter]
    // with bias, the clamped SwiGLU g sigmoid(alpha g) (u + beta) with g <= limit, |u| <= limit. Float experts go to MoE;
    // quantized ones to QMoE where it carries them (QmoeCarries), with the experts in blocks.
    public override Value? FusedMoe(DecoderGraph g, Value tokens, Value routerLogits, StackedSwigluExperts experts)
    {
        var q = g.Options.Quantization;
        var attributes = new List<Attr>
        {
            Attr.Int("k", g.Config.ExpertsPerToken),
            Attr.Int("normalize_routing_weights", experts.Normalize ? 1 : 0),
            Attr.String("activation_type", "swiglu"), Attr.Int("swiglu_fusion", 1),
            Attr.Float("activation_alpha", experts.Alpha), Attr.Float("activation_beta", experts.Beta), Attr.Float("swiglu_limit", experts.Limit),
        };
        if (q is null)
        {
            using var scope = g.B.Scope("experts");
            return g.B.MsOp("MoE", [tokens, routerLogits, g.DerivedWeight(experts.Fc1Name, experts.Fc1), experts.Fc1Bias(),
                g.DerivedWeight(experts.Fc2Name, experts.Fc2), experts.Fc2Bias()], [.. attributes]);   // [N, hidden]
        }
        if (!QmoeCarries(g.Config, q, g.Float16)) return null;
        using (g.B.Scope("experts"))
        {
            var (fc1, fc1Scales) = StackedExpertBlocks.Initializers(g.B, experts.Fc1Name, experts.Fc1(), q);
            var (fc2, fc2Scales) = StackedExpertBlocks.Initializers(g.B, experts.Fc2Name, experts.Fc2(), q);
            attributes.AddRange([Attr.Int("expert_weight_bits", q.Bits), Attr.Int("block_size", q.BlockSize)]);
            // 4-bit experts compute in fp32 whatever the level: on GptOssTests' config at level 4, the CPU kernel's int8-activation
            // path for them gave 4.7x the logit error of its fp32 path (8-bit experts: 1.4x), so only 8-bit experts take the level.
            if (q.Bits == 8) attributes.Add(Attr.Int("accuracy_level", q.AccuracyLevel));
            return g.B.MsOp("QMoE", [tokens, routerLogits, fc1, fc1Scales, experts.Fc1Bias(), fc2, fc2Scales, experts.Fc2Bias()], [.. attributes]); // [N, hidden]
        }
    }

    public override void WriteMetadata(GraphBuilder b) =>
        b.Metadata(GraphContract.Metadata.GqaSeqlensK, GraphContract.Metadata.GqaSeqlensKLastAttendedColumn);
}
