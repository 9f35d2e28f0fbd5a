using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Gemma 2 (Gemma2ForCausalLM): Gemma's tensors and embedding scale plus sandwich norms, with
/// <code>
///   x = embed(ids) * sqrt(hidden)                         (the multiplier in the activation type)
///   x = x + post_attention_layernorm(attn(input_layernorm(x)))
///   x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
///   logits = tanh(lm_head(norm(x)) / final_cap) * final_cap
/// </code>
/// every RMSNorm scaling by (1 + w); GeGLU (hidden_activation, tanh GELU); head_dim from config;
/// scores scaled by query_pre_attn_scalar^-0.5 and soft-capped, tanh(s / cap) * cap, before the
/// mask; a sliding window on the even layers (layer_types when given); tied embeddings.
/// <code>
///   model.layers.{i}.pre_feedforward_layernorm.weight, post_feedforward_layernorm.weight [hidden]
/// </code>
/// </summary>
public class Gemma2 : Gemma
{
    public override string Name => "gemma2";
    public override IReadOnlyList<string> ModelTypes => ["gemma2"];
    public override IReadOnlyList<string> Architectures => ["Gemma2ForCausalLM"];

    /// <summary>Gemma2Config's defaults where a field is absent; Gemma2MLP reads hidden_activation only.</summary>
    protected override SharedConfigDefaults Defaults => new()
    {
        NumKvHeads = 4, HeadDim = 256, VocabSize = 256000, MaxPositions = 8192,
        ActivationField = "hidden_activation", Activation = "gelu_pytorch_tanh", TieWordEmbeddings = true, BosTokenId = 2, EosTokenIds = [1],
    };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        int layers = r.RequiredInt("num_hidden_layers");
        // A null soft-cap turns it off.
        double? Cap(string field, double fallback) => r.Present(field) ? r.Double(field) : fallback;
        var slidingTypes = HuggingFaceConfig.ReadSlidingLayerTypes(r);
        return HuggingFaceConfig.ReadShared(r, modelType, Defaults) with
        {
            NormScalePlusOne = true,
            AttentionBias = r.Bool("attention_bias") ?? false,
            SlidingWindow = r.Int("sliding_window") ?? 4096,
            SlidingLayers = slidingTypes ?? HuggingFaceConfig.LayerFlags(layers, i => i % 2 == 0),
            AttentionScale = 1 / Math.Sqrt(r.Double("query_pre_attn_scalar") ?? 256),
            AttentionSoftcap = Cap("attn_logit_softcapping", 50),
            FinalLogitSoftcap = Cap("final_logit_softcapping", 30),
        };
    }

    private static (string PreFeedForward, string PostFeedForward) SandwichNorms(int layer) =>
        ($"model.layers.{layer}.pre_feedforward_layernorm", $"model.layers.{layer}.post_feedforward_layernorm");

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        var (pre, post) = SandwichNorms(layer);
        return NormSpecs(c, pre).Concat(NormSpecs(c, post)).Concat(base.FeedForwardSpecs(c, layer));
    }

    protected override (Value Residual, Value Normed) Layer(DecoderGraph g, int layer, Value x, Value normed, NextNorm next, LayerCache cache)
    {
        var b = g.B;
        var (preFeedForward, postFeedForward) = SandwichNorms(layer);
        var attention = Attend(g, layer, normed, cache);                                          // [B, S, hidden]
        using (b.Scope("post_attention_layernorm")) attention = Norm.Apply(g, attention, PostAttentionNorm(layer));
        using (b.Scope("pre_feedforward_layernorm")) (x, normed) = Norm.ResidualThenNorm(g, x, attention, preFeedForward);
        Value feedForward;
        using (b.Scope("mlp")) feedForward = FeedForward(g, layer, normed);
        using (b.Scope("post_feedforward_layernorm")) feedForward = Norm.Apply(g, feedForward, postFeedForward);
        using (b.Scope(next.Scope)) return Norm.ResidualThenNorm(g, x, feedForward, next.Prefix);
    }

    protected override Value LmHead(DecoderGraph g, Value x)
    {
        var logits = base.LmHead(g, x);                                                          // [B, S, vocab]
        if (g.Config.FinalLogitSoftcap is not { } cap) return logits;
        var b = g.B;
        return b.Op("Mul", [b.Op("Tanh", [b.Op("Mul", [logits, g.Scalar((float)(1 / cap))])]), g.Scalar((float)cap)]);
    }
}
