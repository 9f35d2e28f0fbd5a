using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Phi-3, Phi-3.5-mini and Phi-4-mini (Phi3ForCausalLM): Llama's pre-norm layer with fused
/// projections, LongRope scaling (legacy type names "su" and "yarn" mean longrope here), partial
/// rotary (Phi-4-mini rotates 0.75 of each head) and a sliding window on every layer when set.
/// <code>
///   model.layers.{i}.self_attn.qkv_proj.weight   [(heads + 2 kv_heads) * head_dim, hidden]  (q | k | v rows)
///   model.layers.{i}.self_attn.o_proj.weight     [hidden, heads * head_dim]
///   model.layers.{i}.mlp.gate_up_proj.weight     [2 * intermediate, hidden]                 (gate | up rows)
///   model.layers.{i}.mlp.down_proj.weight        [hidden, intermediate]
///   input_layernorm, post_attention_layernorm, model.embed_tokens, model.norm, lm_head as in Llama
/// </code>
/// </summary>
public sealed class Phi3 : DecoderFamily
{
    public override string Name => "phi3";
    public override IReadOnlyList<string> ModelTypes => ["phi3"];
    public override IReadOnlyList<string> Architectures => ["Phi3ForCausalLM"];

    /// <summary>One layer's tensor names, used by both <see cref="ExpectedWeights"/> and the graph.</summary>
    private sealed record LayerNames(string InputNorm, string Qkv, string O, string PostAttentionNorm, string GateUp, string Down);

    private static LayerNames Names(int layer)
    {
        string l = $"model.layers.{layer}";
        return new($"{l}.input_layernorm", $"{l}.self_attn.qkv_proj.weight", $"{l}.self_attn.o_proj.weight",
            $"{l}.post_attention_layernorm", $"{l}.mlp.gate_up_proj.weight", $"{l}.mlp.down_proj.weight");
    }

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        if (r.Bool("attention_bias") == true || r.Bool("mlp_bias") == true || r.Bool("lm_head_bias") == true)
            throw new ConfigException(r.Source, "attention_bias", "is not supported for phi3 (released Phi-3 models have no biases)");
        // Phi3Config's defaults where a field is absent.
        return HuggingFaceConfig.ReadShared(r, modelType, new() { NormEps = 1e-5, RopeScaling = ReadRopeScaling, EosTokenIds = [32000] }) with
        {
            PartialRotaryFactor = r.Double("partial_rotary_factor") ?? 1,
            SlidingWindow = r.Int("sliding_window"),
        };
    }

    /// <summary>Phi3Config's rope_scaling: null, or longrope (type "longrope", "su" or "yarn") with short and long factors;
    /// original_max_position_embeddings is the top-level field (4096 by default), else the block's own.</summary>
    private static RopeScaling ReadRopeScaling(ConfigFields r)
    {
        if (r.Object("rope_scaling") is not { } scaling) return new RopeScaling();
        string type = scaling.String("rope_type") ?? scaling.String("type") ?? throw new ConfigException(r.Source, "rope_scaling.type", "is missing");
        if (type is not ("longrope" or "su" or "yarn"))
            throw new ConfigException(r.Source, "rope_scaling.type", $"'{type}' is not supported for phi3 (longrope, su, yarn)");
        return new RopeScaling
        {
            Type = RopeScalingType.LongRope,
            OriginalMaxPositions = r.Int("original_max_position_embeddings") ?? scaling.Int("original_max_position_embeddings") ?? 4096,
            ShortFactor = scaling.Doubles("short_factor") ?? throw new ConfigException(r.Source, "rope_scaling.short_factor", "is missing"),
            LongFactor = scaling.Doubles("long_factor") ?? throw new ConfigException(r.Source, "rope_scaling.long_factor", "is missing"),
            AttentionFactor = scaling.Double("attention_factor"),
        };
    }

    protected override string EmbeddingName => "model.embed_tokens.weight";
    protected override string FinalNorm => "model.norm";
    protected override string InputNorm(int layer) => Names(layer).InputNorm;
    protected override string PostAttentionNorm(int layer) => Names(layer).PostAttentionNorm;

    public override IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig c)
    {
        var specs = new List<TensorSpec> { new(EmbeddingName, [c.VocabSize, c.HiddenSize]) };
        long qWidth = (long)c.NumHeads * c.HeadDim, kvWidth = (long)c.NumKvHeads * c.HeadDim;
        for (int i = 0; i < c.NumLayers; i++)
        {
            var n = Names(i);
            specs.AddRange(NormSpecs(c, n.InputNorm));
            specs.Add(new(n.Qkv, [qWidth + 2 * kvWidth, c.HiddenSize]));
            specs.Add(new(n.O, [c.HiddenSize, qWidth]));
            specs.AddRange(NormSpecs(c, n.PostAttentionNorm));
            specs.Add(new(n.GateUp, [2L * c.IntermediateSize, c.HiddenSize]));
            specs.Add(new(n.Down, [c.HiddenSize, c.IntermediateSize]));
        }
        specs.AddRange(NormSpecs(c, FinalNorm));
        if (!c.TieWordEmbeddings) specs.Add(new(LmHeadName, [c.VocabSize, c.HiddenSize]));
        return specs;
    }

    //   x ─qkv_proj─ [B, S, (h + 2 kv) hd], packed as the checkpoint stores it
    protected override Value? PackedQkv(DecoderGraph g, int layer, Value x)
    {
        using var scope = g.B.Scope("qkv_proj");
        return g.Project(x, Names(layer).Qkv);
    }

    //   x ─qkv_proj─ [B, S, (h + 2 kv) hd] ─Split─ q [B, S, h hd], k, v [B, S, kv hd]
    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        var c = g.Config;
        using var scope = b.Scope("qkv_proj");
        var qkv = g.Project(x, Names(layer).Qkv);
        long qWidth = (long)c.NumHeads * c.HeadDim, kvWidth = (long)c.NumKvHeads * c.HeadDim;
        var parts = b.Node(GraphBuilder.DefaultDomain, "Split", [qkv, b.Int64s(qWidth, kvWidth, kvWidth)], 3, Attr.Int("axis", -1));
        return (parts[0], parts[1], parts[2]);
    }

    protected override Value ProjectOut(DecoderGraph g, int layer, Value context) => g.Project(context, Names(layer).O);

    //   x ─gate_up_proj─ [B, S, 2I] ─Split─ gate, up [B, S, I] ─ act(gate) * up ─down_proj─ [B, S, hidden]
    protected override Value FeedForward(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        var n = Names(layer);
        Value hidden;
        using (b.Scope("gate_up_proj"))
        {
            var gateUp = g.Project(x, n.GateUp);
            long width = g.Config.IntermediateSize;
            var parts = b.Node(GraphBuilder.DefaultDomain, "Split", [gateUp, b.Int64s(width, width)], 2, Attr.Int("axis", -1));
            using (b.Scope("act_fn")) hidden = b.Op("Mul", [Mlp.Activate(g, parts[0]), parts[1]]);
        }
        using (b.Scope("down_proj")) return g.Project(hidden, n.Down);
    }
}
