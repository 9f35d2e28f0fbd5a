using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Granite (GraniteForCausalLM): Llama's tensors and layer, with four scalars from config.json:
/// <code>
///   x = embed(ids) * embedding_multiplier
///   x = x + attn(input_layernorm(x)) * residual_multiplier      scores = q.k * attention_multiplier
///   x = x + mlp(post_attention_layernorm(x)) * residual_multiplier
///   logits = lm_head(norm(x)) / logits_scaling
/// </code>
/// attention_multiplier replaces 1/sqrt(head_dim) as the score scale (GraniteConfig's default is 1.0);
/// attention_bias biases q, k, v and o_proj, mlp_bias the MLP's projections, as in Llama.
/// </summary>
public sealed class Granite : Llama
{
    public override string Name => "granite";
    public override IReadOnlyList<string> ModelTypes => ["granite"];
    public override IReadOnlyList<string> Architectures => ["GraniteForCausalLM"];
    public override string? GgufArchitecture => null;

    protected override bool ReadsMlpBias(string modelType) => true;
    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType) => base.ReadConfig(r, modelType) with
    {
        // GraniteConfig's defaults where a field is absent.
        AttentionScale = r.Double("attention_multiplier") ?? 1.0,
        EmbeddingMultiplier = r.Double("embedding_multiplier") ?? 1.0,
        ResidualMultiplier = r.Double("residual_multiplier") ?? 1.0,
        LogitsScaling = r.Double("logits_scaling") ?? 1.0,
    };

    protected override (Value Residual, Value Normed) Layer(DecoderGraph g, int layer, Value x, Value normed, NextNorm next, LayerCache cache)
    {
        var b = g.B;
        var residualScale = g.Scalar((float)g.Config.ResidualMultiplier);
        var attention = b.Op("Mul", [Attend(g, layer, normed, cache), residualScale]);                // [B, S, hidden]
        using (b.Scope("post_attention_layernorm")) (x, normed) = Norm.ResidualThenNorm(g, x, attention, PostAttentionNorm(layer));
        Value feedForward;
        using (b.Scope("mlp")) feedForward = b.Op("Mul", [FeedForward(g, layer, normed), residualScale]); // [B, S, hidden]
        using (b.Scope(next.Scope)) return Norm.ResidualThenNorm(g, x, feedForward, next.Prefix);
    }

    protected override Value Embed(DecoderGraph g) =>
        g.B.Op("Mul", [base.Embed(g), g.Scalar((float)g.Config.EmbeddingMultiplier)]);             // [B, S, hidden]

    protected override Value LmHead(DecoderGraph g, Value x) =>
        g.B.Op("Div", [base.LmHead(g, x), g.Scalar((float)g.Config.LogitsScaling)]);               // [B, S, vocab]
}
