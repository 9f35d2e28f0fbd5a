using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Gemma 3, text (Gemma3ForCausalLM, model_type gemma3_text): Gemma 2's layer (embeddings times
/// sqrt(hidden), (1 + w) RMSNorms, four norms per layer, GeGLU, query_pre_attn_scalar) plus a
/// (1 + w) RMSNorm over each head of q and k before rotary, and two rotaries:
/// <code>
///   sliding layers (layer_types, else all but every sliding_window_pattern-th):  window sliding_window,
///       rotary base rope_local_base_freq, unscaled
///   full layers:  rotary base rope_theta with rope_scaling (linear, factor 8 in the released configs)
///   model.layers.{i}.self_attn.q_norm.weight, k_norm.weight [head_dim]
/// </code>
/// Soft-capping as transformers does it: final_logit_softcapping caps the logits when set (null by
/// default); attn_logit_softcapping is read by Gemma3Config but Gemma3Attention never applies it, so
/// it is ignored here too.
/// </summary>
public sealed class Gemma3 : Gemma2
{
    public override string Name => "gemma3";
    public override IReadOnlyList<string> ModelTypes => ["gemma3_text"];
    public override IReadOnlyList<string> Architectures => ["Gemma3ForCausalLM"];

    /// <summary>Gemma3TextConfig's defaults where they differ from Gemma 2's.</summary>
    protected override SharedConfigDefaults Defaults => base.Defaults with { VocabSize = 262208, MaxPositions = 131072, RopeTheta = 1000000 };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        string source = r.Source;
        if (r.Present("rope_parameters"))
            throw new ConfigException(source, "rope_parameters", "(per layer type) is not read: give rope_theta, rope_scaling and rope_local_base_freq as the released Gemma 3 configs do");
        if (r.Bool("use_bidirectional_attention") == true)
            throw new ConfigException(source, "use_bidirectional_attention", "(true) is not supported: a decoder export attends causally");
        int layers = r.RequiredInt("num_hidden_layers");
        var slidingTypes = HuggingFaceConfig.ReadSlidingLayerTypes(r);
        int pattern = r.Int("sliding_window_pattern") ?? 6;
        if (pattern <= 0) throw new ConfigException(source, "sliding_window_pattern", $"({pattern}) must be positive");
        // Gemma3TextConfig: an absent or empty layer_types slides every layer but each pattern-th.
        bool[] sliding = slidingTypes is { Length: > 0 } ? slidingTypes : HuggingFaceConfig.LayerFlags(layers, i => (i + 1) % pattern != 0);
        int? window = r.Present("sliding_window") ? r.Int("sliding_window") : 4096;
        if (window is null && sliding.Any(s => s))
            throw new ConfigException(source, "sliding_window", "is null while some layers are sliding_attention: give the window or mark the layers full_attention");
        return HuggingFaceConfig.ReadShared(r, modelType, Defaults) with
        {
            NormScalePlusOne = true,
            LocalRopeTheta = r.Double("rope_local_base_freq") ?? 10000,
            AttentionBias = r.Bool("attention_bias") ?? false,
            SlidingWindow = window,
            SlidingLayers = sliding,
            AttentionScale = 1 / Math.Sqrt(r.Double("query_pre_attn_scalar") ?? 256),
            AttentionSoftcap = null,
            FinalLogitSoftcap = r.Double("final_logit_softcapping"),
        };
    }

    protected override IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer) => HeadNorms.Specs(c, layer);

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var (q, k, v) = base.ProjectQkv(g, layer, x);
        (q, k) = HeadNorms.Apply(g, layer, q, k, prefix => Norm.RmsScale(g, prefix));   // (1 + w) scales
        return (q, k, v);
    }
}
