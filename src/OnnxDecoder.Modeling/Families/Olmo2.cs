using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// OLMo 2 (Olmo2ForCausalLM): Llama's projections with post-norms in place of pre-norms, and an
/// RMSNorm over the whole q and k projections (all heads at once) before the split into heads:
/// <code>
///   q = q_norm(q_proj(x)), k = k_norm(k_proj(x))          (then heads, rotary, attention)
///   x = x + post_attention_layernorm(attn(x))
///   x = x + post_feedforward_layernorm(mlp(x))
///   logits = lm_head(norm(x))
///   model.layers.{i}.self_attn.q_norm.weight [heads*head_dim];  k_norm.weight [kv_heads*head_dim]
///   model.layers.{i}.post_attention_layernorm.weight, post_feedforward_layernorm.weight [hidden]  (no input_layernorm)
/// </code>
/// </summary>
public sealed class Olmo2 : Llama
{
    public override string Name => "olmo2";
    public override IReadOnlyList<string> ModelTypes => ["olmo2"];
    public override IReadOnlyList<string> Architectures => ["Olmo2ForCausalLM"];
    public override string? GgufArchitecture => null;

    protected override bool HasInputNorms => false;
    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    // Olmo2Config's default epsilon is 1e-5.
    protected override SharedConfigDefaults Defaults => base.Defaults with { NormEps = 1e-5 };

    private static (string Q, string K) ProjectionNorms(int layer) =>
        ($"model.layers.{layer}.self_attn.q_norm", $"model.layers.{layer}.self_attn.k_norm");

    private static string PostFeedForwardNorm(int layer) => $"model.layers.{layer}.post_feedforward_layernorm";

    // Llama's list less the input norms OLMo 2 does not have.
    public override IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig c) =>
        [.. base.ExpectedWeights(c).Where(s => !s.Name.EndsWith(".input_layernorm.weight", StringComparison.Ordinal))];

    protected override IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer)
    {
        var (q, k) = ProjectionNorms(layer);
        yield return new(q + ".weight", [(long)c.NumHeads * c.HeadDim]);
        yield return new(k + ".weight", [(long)c.NumKvHeads * c.HeadDim]);
    }

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer) =>
        base.FeedForwardSpecs(c, layer).Concat(NormSpecs(c, PostFeedForwardNorm(layer)));

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var (q, k, v) = base.ProjectQkv(g, layer, x);                                          // q [B, S, heads*head_dim], k [B, S, kv_heads*head_dim]
        var (qNorm, kNorm) = ProjectionNorms(layer);
        using (g.B.Scope("q_norm")) q = Norm.Apply(g, q, qNorm);
        using (g.B.Scope("k_norm")) k = Norm.Apply(g, k, kNorm);
        return (q, k, v);
    }

    /// <summary>x + post_attention_layernorm(attn(x)), then + post_feedforward_layernorm(mlp(x)); the layer's
    /// input is the raw residual stream (<paramref name="normed"/> is x), and only the last layer norms its output.</summary>
    protected override (Value Residual, Value Normed) Layer(DecoderGraph g, int layer, Value x, Value normed, NextNorm next, LayerCache cache)
    {
        var b = g.B;
        var attention = Attend(g, layer, x, cache);                                              // [B, S, hidden]
        using (b.Scope("post_attention_layernorm")) attention = Norm.Apply(g, attention, PostAttentionNorm(layer));
        x = b.Op("Add", [x, attention]);
        Value feedForward;
        using (b.Scope("mlp")) feedForward = FeedForward(g, layer, x);
        using (b.Scope("post_feedforward_layernorm")) feedForward = Norm.Apply(g, feedForward, PostFeedForwardNorm(layer));
        if (next.Prefix == FinalNorm)
            using (b.Scope(next.Scope)) return Norm.ResidualThenNorm(g, x, feedForward, next.Prefix);
        x = b.Op("Add", [x, feedForward]);
        return (x, x);
    }
}
