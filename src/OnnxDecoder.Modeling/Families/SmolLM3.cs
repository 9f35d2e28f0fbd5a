using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// SmolLM3 (SmolLM3ForCausalLM): Llama's tensors and layer; the layers whose no_rope_layers entry is
/// 0 attend without rotary positions (NoPE), and layer_types says which layers use sliding_window.
/// As SmolLM3Config fills them in when absent: no_rope_layers[i] = 1 unless (i + 1) is a multiple
/// of no_rope_layer_interval (4); a layer slides when use_sliding_window is set, sliding_window is
/// not null and the layer has no rotary. Without a window every layer attends to the whole cache.
/// </summary>
public sealed class SmolLM3 : Llama
{
    public override string Name => "smollm3";
    public override IReadOnlyList<string> ModelTypes => ["smollm3"];
    public override IReadOnlyList<string> Architectures => ["SmolLM3ForCausalLM"];
    public override string? GgufArchitecture => null;

    protected override bool ReadsMlpBias(string modelType) => true;
    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    // SmolLM3Config's defaults where they differ from LlamaConfig's.
    protected override SharedConfigDefaults Defaults => base.Defaults with { RopeTheta = 2000000, TieWordEmbeddings = true };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        string source = r.Source;
        int layers = Math.Clamp(r.Int("num_hidden_layers") ?? 0, 0, DecoderConfig.MaxLayers);
        bool[] rotary;
        if (r.Doubles("no_rope_layers", DecoderConfig.MaxLayers) is { } flags)
        {
            // transformers indexes the list by layer, so a longer list is allowed; each entry is 1 (rotary) or 0 (NoPE).
            if (flags.Count < layers) throw new ConfigException(source, "no_rope_layers", $"has {flags.Count} entries for {layers} layers (num_hidden_layers)");
            if (flags.Any(f => f is not (0 or 1))) throw new ConfigException(source, "no_rope_layers", "entries must be 1 (use rotary) or 0 (no rotary)");
            rotary = [.. flags.Take(layers).Select(f => f == 1)];
        }
        else
        {
            int interval = r.Int("no_rope_layer_interval") ?? 4;
            if (interval <= 0) throw new ConfigException(source, "no_rope_layer_interval", $"({interval}) must be positive");
            rotary = [.. Enumerable.Range(0, layers).Select(i => (i + 1) % interval != 0)];
        }

        int? window = r.Int("sliding_window");
        bool useWindow = r.Bool("use_sliding_window") ?? false;
        bool[] sliding = HuggingFaceConfig.ReadSlidingLayerTypes(r) ?? [.. rotary.Select(rotates => useWindow && window is not null && !rotates)];
        if (sliding.Any(s => s) && window is null)
            throw new ConfigException(source, "sliding_window", "is null while layer_types names sliding_attention layers: give the window or mark the layers full_attention");

        return base.ReadConfig(r, modelType) with
        {
            RotaryLayers = rotary,
            SlidingWindow = sliding.Any(s => s) ? window : null,
            SlidingLayers = sliding.Any(s => s) ? sliding : null,
        };
    }
}
