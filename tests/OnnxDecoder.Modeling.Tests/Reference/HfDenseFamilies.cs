namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// What the reference reads for Gemma 3 (text), Granite, OLMo 2 and SmolLM3 beyond the Llama-like
/// fields <see cref="HfSpec"/> binds, with the rules of transformers' Gemma3TextConfig, GraniteConfig,
/// Olmo2Config and SmolLM3Config and their modeling code:
/// <list type="bullet">
/// <item>Gemma 3: layer_types, else layer i slides unless (i + 1) is a multiple of sliding_window_pattern
///   (6); sliding layers rotate with base rope_local_base_freq (10000) and no scaling, full layers with
///   rope_theta (1e6) and rope_scaling. Gemma3Attention passes no soft-cap to its attention function, so
///   attn_logit_softcapping has no effect; final_logit_softcapping (null by default) caps the logits.</item>
/// <item>Granite: embeddings times embedding_multiplier, attention and MLP outputs times residual_multiplier
///   before each residual add, scores times attention_multiplier (not head_dim^-0.5), logits / logits_scaling.</item>
/// <item>OLMo 2: q_norm(q_proj(x)) and k_norm(k_proj(x)) over all heads at once, then heads and rotary;
///   x += post_attention_layernorm(attn(x)); x += post_feedforward_layernorm(mlp(x)); no input norms.</item>
/// <item>SmolLM3: no_rope_layers[i] == 1 means layer i rotates (default: 0 on every no_rope_layer_interval-th,
///   4); layer_types, else a layer slides when use_sliding_window, sliding_window is set and it has no rotary.</item>
/// </list>
/// </summary>
internal static class HfDenseFamilies
{
    /// <summary>The config class's layer_types when config.json gives none (Gemma 3, SmolLM3).</summary>
    public static string[] DefaultLayerTypes(HfSpec.Fields f, string type, int layers)
    {
        if (type == "gemma3_text")
        {
            int pattern = f.Int("sliding_window_pattern") ?? 6;
            if (pattern <= 0) throw new FormatException($"{f.Source}: sliding_window_pattern ({pattern}) must be positive");
            return Enumerable.Range(0, layers).Select(i => (i + 1) % pattern != 0 ? "sliding_attention" : "full_attention").ToArray();
        }
        var rotates = Rotates(f, layers);
        bool windowed = (f.Bool("use_sliding_window") ?? false) && f.Int("sliding_window") is not null;
        return rotates.Select(r => windowed && !r ? "sliding_attention" : "full_attention").ToArray();
    }

    /// <summary>SmolLM3's no_rope_layers (1 = rotary), or its default from no_rope_layer_interval.</summary>
    private static bool[] Rotates(HfSpec.Fields f, int layers)
    {
        if (f.DoubleList("no_rope_layers") is { } flags)
        {
            if (flags.Length < layers) throw new FormatException($"{f.Source}: no_rope_layers has {flags.Length} entries for {layers} layers");
            if (flags.Any(v => v is not (0 or 1))) throw new FormatException($"{f.Source}: no_rope_layers entries must be 0 or 1");
            return flags.Take(layers).Select(v => v == 1).ToArray();
        }
        int interval = f.Int("no_rope_layer_interval") ?? 4;
        if (interval <= 0) throw new FormatException($"{f.Source}: no_rope_layer_interval ({interval}) must be positive");
        return Enumerable.Range(0, layers).Select(i => (i + 1) % interval != 0).ToArray();
    }

    /// <summary>The family-specific parts of <paramref name="spec"/>.</summary>
    public static HfSpec Extend(HfSpec spec, HfSpec.Fields f) => spec.ModelType switch
    {
        "gemma3_text" => spec with
        {
            LocalRope = new HfRope { Type = "default", Theta = f.Double("rope_local_base_freq") ?? 10000, Dim = spec.Rope.Dim, MaxPositions = spec.MaxPositions },
        },
        "granite" => spec with
        {
            EmbeddingMultiplier = f.Double("embedding_multiplier") ?? 1.0,
            ResidualMultiplier = f.Double("residual_multiplier") ?? 1.0,
            LogitsScaling = f.Double("logits_scaling") ?? 1.0,
        },
        "olmo2" => spec with { QkNormWhole = true, PostNormOnly = true },
        "smollm3" => spec with { LayerRotates = Rotates(f, spec.NumLayers) },
        _ => spec,
    };
}
