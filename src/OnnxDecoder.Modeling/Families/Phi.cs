using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Phi-1, Phi-1.5 and Phi-2 (PhiForCausalLM, model_type phi): one LayerNorm per layer feeds attention
/// and the MLP in parallel, and both outputs join the residual stream together:
/// <code>
///   h = input_layernorm(x);   x = x + dense(attn(h)) + fc2(gelu_new(fc1(h)))
///   logits = lm_head(final_layernorm(x)) + lm_head.bias
/// </code>
/// Partial rotary (partial_rotary_factor of each head, 0.4 in Phi-2, as two halves), biases on
/// q/k/v, dense, fc1, fc2 and lm_head; with qk_layernorm a LayerNorm over head_dim on each q and k
/// head before rotary. Tensor names (<see cref="Names"/> spells them):
/// <code>
///   model.embed_tokens.weight                          [vocab, hidden]
///   model.layers.{i}.input_layernorm.weight/.bias      [hidden]
///   model.layers.{i}.self_attn.q_proj/k_proj/v_proj.weight/.bias  [heads*head_dim (kv_heads*head_dim), hidden]
///   model.layers.{i}.self_attn.q_layernorm/k_layernorm.weight/.bias [head_dim]   (qk_layernorm only)
///   model.layers.{i}.self_attn.dense.weight/.bias      [hidden, heads*head_dim]
///   model.layers.{i}.mlp.fc1.weight/.bias [intermediate, hidden]; mlp.fc2.weight/.bias [hidden, intermediate]
///   model.final_layernorm.weight/.bias [hidden]; lm_head.weight [vocab, hidden] + lm_head.bias [vocab]
/// </code>
/// </summary>
public sealed class Phi : DecoderFamily
{
    public override string Name => "phi";
    public override IReadOnlyList<string> ModelTypes => ["phi"];
    public override IReadOnlyList<string> Architectures => ["PhiForCausalLM"];

    /// <summary>One layer's tensor names, used by both <see cref="ExpectedWeights"/> and the graph.</summary>
    private sealed record LayerNames(string InputNorm, string Attn, string? QNorm, string? KNorm, MlpWeights Mlp);

    private static LayerNames Names(DecoderConfig c, int layer)
    {
        string l = $"model.layers.{layer}", attn = $"{l}.self_attn";
        bool qkNorm = c.QkLayerNorm;
        return new($"{l}.input_layernorm", attn, qkNorm ? $"{attn}.q_layernorm" : null, qkNorm ? $"{attn}.k_layernorm" : null,
            new MlpWeights(null, $"{l}.mlp.fc1.weight", $"{l}.mlp.fc2.weight", $"{l}.mlp.fc1.bias", $"{l}.mlp.fc2.bias"));
    }

    // PhiConfig's defaults where a field is absent; PhiAttention takes head_dim = hidden_size / num_attention_heads (no head_dim field).
    private static readonly SharedConfigDefaults Defaults = new()
    {
        ReadsHeadDim = false, VocabSize = 51200, MaxPositions = 2048, NormEpsField = "layer_norm_eps", NormEps = 1e-5, Activation = "gelu_new",
    };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType) => HuggingFaceConfig.ReadShared(r, modelType, Defaults) with
    {
        Norm = NormKind.LayerNorm,
        PartialRotaryFactor = r.Double("partial_rotary_factor") ?? 0.5,
        GatedMlp = false,
        AttentionBias = true,
        ProjectionBias = true,
        QkLayerNorm = r.Bool("qk_layernorm") ?? false,
    };

    protected override string EmbeddingName => "model.embed_tokens.weight";
    protected override string FinalNorm => "model.final_layernorm";
    protected override string InputNorm(int layer) => $"model.layers.{layer}.input_layernorm";
    // Phi's layer has no second norm: both blocks read input_layernorm's output (see Layer).
    protected override string PostAttentionNorm(int layer) => throw new InvalidOperationException("phi layers have one norm (input_layernorm)");
    private const string LmHeadBias = "lm_head.bias";

    public override IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig c)
    {
        var specs = new List<TensorSpec> { new(EmbeddingName, [c.VocabSize, c.HiddenSize]) };
        long qWidth = (long)c.NumHeads * c.HeadDim, kvWidth = (long)c.NumKvHeads * c.HeadDim;
        for (int i = 0; i < c.NumLayers; i++)
        {
            var n = Names(c, i);
            specs.AddRange(NormSpecs(c, n.InputNorm));
            foreach (var (projection, width) in new[] { ("q_proj", qWidth), ("k_proj", kvWidth), ("v_proj", kvWidth) })
            {
                specs.Add(new($"{n.Attn}.{projection}.weight", [width, c.HiddenSize]));
                specs.Add(new($"{n.Attn}.{projection}.bias", [width]));
            }
            foreach (var norm in new[] { n.QNorm, n.KNorm })
                if (norm is not null)
                {
                    specs.Add(new(norm + ".weight", [c.HeadDim]));
                    specs.Add(new(norm + ".bias", [c.HeadDim]));
                }
            specs.Add(new($"{n.Attn}.dense.weight", [c.HiddenSize, qWidth]));
            specs.Add(new($"{n.Attn}.dense.bias", [c.HiddenSize]));
            specs.AddRange(MlpSpecs(n.Mlp, c.HiddenSize, c.IntermediateSize));
        }
        specs.AddRange(NormSpecs(c, FinalNorm));
        if (!c.TieWordEmbeddings) specs.Add(new(LmHeadName, [c.VocabSize, c.HiddenSize]));
        specs.Add(new(LmHeadBias, [c.VocabSize]));
        return specs;
    }

    //   x ─┬─ attn(h) ──┐
    //      h = ln(x) ───┤  x + attn + mlp, then the next layer's norm
    //      └─ mlp(h) ───┘
    protected override (Value Residual, Value Normed) Layer(DecoderGraph g, int layer, Value x, Value normed, NextNorm next, LayerCache cache)
    {
        var b = g.B;
        var attention = Attend(g, layer, normed, cache);                                       // [B, S, hidden]
        Value feedForward;
        using (b.Scope("mlp")) feedForward = FeedForward(g, layer, normed);                   // [B, S, hidden]
        var both = b.Op("Add", [attention, feedForward]);
        using (b.Scope(next.Scope)) return Norm.ResidualThenNorm(g, x, both, next.Prefix);
    }

    //   x ─qkv_proj─ [B, S, (h + 2 kv) hd] + the three biases as one (the ort lowering's one projection)
    private static Value FusedQkv(DecoderGraph g, string attn, Value x)
    {
        using var scope = g.B.Scope("qkv_proj");
        string[] weights = [$"{attn}.q_proj.weight", $"{attn}.k_proj.weight", $"{attn}.v_proj.weight"];
        string[] biases = [$"{attn}.q_proj.bias", $"{attn}.k_proj.bias", $"{attn}.v_proj.bias"];
        var qkv = FusedProjections.Project(g, x, $"{attn}.qkv_proj.weight", weights);
        return g.B.Op("Add", [qkv, FusedProjections.Bias(g, $"{attn}.qkv_proj.bias", biases)]);
    }

    // Phi-1.5/2 have no q/k layernorms: their packed qkv goes to attention as it is.
    protected override Value? PackedQkv(DecoderGraph g, int layer, Value x)
    {
        var n = Names(g.Config, layer);
        return g.FusesProjections && n.QNorm is null && n.KNorm is null ? FusedQkv(g, n.Attn, x) : null;
    }

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        var c = g.Config;
        var n = Names(c, layer);
        Value q, k, v;
        if (g.FusesProjections)
        {
            long qWidth = (long)c.NumHeads * c.HeadDim, kvWidth = (long)c.NumKvHeads * c.HeadDim;
            var qkv = FusedQkv(g, n.Attn, x);
            using (b.Scope("qkv_proj"))
            {
                var parts = FusedProjections.Split(g, qkv, qWidth, kvWidth, kvWidth);
                (q, k, v) = (parts[0], parts[1], parts[2]);
            }
        }
        else
        {
            using (b.Scope("q_proj")) q = g.Linear(x, $"{n.Attn}.q_proj.weight", $"{n.Attn}.q_proj.bias");
            using (b.Scope("k_proj")) k = g.Linear(x, $"{n.Attn}.k_proj.weight", $"{n.Attn}.k_proj.bias");
            using (b.Scope("v_proj")) v = g.Linear(x, $"{n.Attn}.v_proj.weight", $"{n.Attn}.v_proj.bias");
        }
        if (n.QNorm is not null) using (b.Scope("q_layernorm")) q = HeadLayerNorm(g, q, g.Config.NumHeads, n.QNorm);
        if (n.KNorm is not null) using (b.Scope("k_layernorm")) k = HeadLayerNorm(g, k, g.Config.NumKvHeads, n.KNorm!);
        return (q, k, v);
    }

    /// <summary>x [B, S, heads*head_dim] -> LayerNorm over each head's head_dim -> [B, S, heads*head_dim].</summary>
    private static Value HeadLayerNorm(DecoderGraph g, Value x, int heads, string prefix)
    {
        var b = g.B;
        var perHead = b.Op("Reshape", [x, b.Int64s(0, 0, heads, g.Config.HeadDim)]);                  // [B, S, heads, head_dim]
        return b.Op("Reshape", [Norm.Apply(g, perHead, prefix), b.Int64s(0, 0, -1)]);
    }

    protected override Value ProjectOut(DecoderGraph g, int layer, Value context)
    {
        string attn = Names(g.Config, layer).Attn;
        return g.Linear(context, $"{attn}.dense.weight", $"{attn}.dense.bias");
    }

    protected override Value FeedForward(DecoderGraph g, int layer, Value x) => Mlp.Apply(g, x, Names(g.Config, layer).Mlp);

    protected override Value LmHead(DecoderGraph g, Value x) => g.B.Op("Add", [base.LmHead(g, x), g.Weight(LmHeadBias)]); // [B, S, vocab]
}
