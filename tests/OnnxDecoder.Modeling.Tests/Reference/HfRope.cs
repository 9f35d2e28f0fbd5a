using System.Text.Json;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// Rotary embedding as transformers' modeling_rope_utils computes it: inverse frequencies over the first
/// <see cref="Dim"/> dimensions of a head (dim = int(head_dim * partial_rotary_factor), rotated as two
/// halves of those dims), and an attention factor that multiplies both cos and sin.
/// </summary>
public sealed record HfRope
{
    /// <summary>default, linear, dynamic, yarn, llama3, longrope.</summary>
    public required string Type { get; init; }
    public required double Theta { get; init; }
    public required int Dim { get; init; }
    public required int MaxPositions { get; init; }
    public double Factor { get; init; } = 1;
    /// <summary>yarn, llama3, longrope: the pre-training context.</summary>
    public int? OriginalMaxPositions { get; init; }
    public double LowFreqFactor { get; init; } = 1;
    public double HighFreqFactor { get; init; } = 4;
    public double BetaFast { get; init; } = 32;
    public double BetaSlow { get; init; } = 1;
    public double? Mscale { get; init; }
    public double? MscaleAllDim { get; init; }
    public bool Truncate { get; init; } = true;
    public double? AttentionFactor { get; init; }
    public IReadOnlyList<double>? ShortFactor { get; init; }
    public IReadOnlyList<double>? LongFactor { get; init; }

    /// <summary>
    /// Inverse frequencies [Dim/2] and the cos/sin multiplier for a forward pass whose largest position id
    /// (over the whole batch) is <paramref name="maxPositionId"/>: transformers' dynamic_rope_update takes
    /// seq_len = max(position_ids) + 1 for the dynamic and longrope types.
    /// </summary>
    public (double[] InvFreq, double Scale) Frequencies(long maxPositionId)
    {
        long seqLen = maxPositionId + 1;
        int half = Dim / 2;
        double[] Base(double theta) => Enumerable.Range(0, half).Select(i => 1.0 / Math.Pow(theta, 2.0 * i / Dim)).ToArray();
        switch (Type)
        {
            case "default":
                return (Base(Theta), 1);
            case "linear":
                return (Base(Theta).Select(f => f / Factor).ToArray(), 1);
            case "dynamic":
            {
                // Recomputed only beyond max_position_embeddings; there seq_len replaces it in the NTK base.
                double length = Math.Max(seqLen, MaxPositions);
                double theta = Theta * Math.Pow(Factor * length / MaxPositions - (Factor - 1), Dim / (Dim - 2.0));
                return (Base(theta), 1);
            }
            case "llama3":
            {
                double old = OriginalMaxPositions!.Value, lowWavelength = old / LowFreqFactor, highWavelength = old / HighFreqFactor;
                return (Base(Theta).Select(f =>
                {
                    double wavelength = 2 * Math.PI / f;
                    if (wavelength > lowWavelength) return f / Factor;
                    if (wavelength < highWavelength) return f;
                    double smooth = (old / wavelength - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
                    return (1 - smooth) * f / Factor + smooth * f;
                }).ToArray(), 1);
            }
            case "yarn":
                return Yarn();
            case "longrope":
                return LongRope(seqLen);
            default:
                throw new InvalidOperationException($"rope type '{Type}' has no reference");
        }
    }

    /// <summary>
    /// YaRN: with rope_scaling.original_max_position_embeddings the factor becomes max_position_embeddings /
    /// original; attention factor defaults to 0.1 ln(factor) + 1 (or the mscale / mscale_all_dim ratio).
    /// </summary>
    private (double[], double) Yarn()
    {
        double factor = OriginalMaxPositions is { } o ? (double)MaxPositions / o : Factor;
        double original = OriginalMaxPositions ?? MaxPositions;
        static double MscaleOf(double scale, double m) => scale <= 1 ? 1 : 0.1 * m * Math.Log(scale) + 1;
        double attention = AttentionFactor ?? (Mscale is { } m && m != 0 && MscaleAllDim is { } ma && ma != 0
            ? MscaleOf(factor, m) / MscaleOf(factor, ma)
            : MscaleOf(factor, 1));
        double CorrectionDim(double rotations) => Dim * Math.Log(original / (rotations * 2 * Math.PI)) / (2 * Math.Log(Theta));
        double low = CorrectionDim(BetaFast), high = CorrectionDim(BetaSlow);
        if (Truncate) { low = Math.Floor(low); high = Math.Ceiling(high); }
        low = Math.Max(low, 0);
        high = Math.Min(high, Dim - 1);
        if (low == high) high += 0.001;
        int half = Dim / 2;
        var inv = new double[half];
        for (int i = 0; i < half; i++)
        {
            double extrapolation = 1.0 / Math.Pow(Theta, 2.0 * i / Dim);
            double interpolation = extrapolation / factor;
            double extrapolationWeight = 1 - Math.Clamp((i - low) / (high - low), 0, 1);
            inv[i] = interpolation * (1 - extrapolationWeight) + extrapolation * extrapolationWeight;
        }
        return (inv, attention);
    }

    /// <summary>
    /// LongRoPE (Phi-3): inv_freq[i] = 1 / (ext[i] * theta^(2i/dim)), ext the long factors when seq_len &gt;
    /// original_max_position_embeddings, else the short ones. Attention factor: rope_scaling.attention_factor,
    /// else sqrt(1 + ln(s) / ln(original)) with s = max_position_embeddings / original (1 when s &lt;= 1).
    /// </summary>
    private (double[], double) LongRope(long seqLen)
    {
        int original = OriginalMaxPositions!.Value;
        var ext = seqLen > original ? LongFactor! : ShortFactor!;
        double scale = (double)MaxPositions / original;
        double attention = AttentionFactor ?? (scale <= 1 ? 1 : Math.Sqrt(1 + Math.Log(scale) / Math.Log(original)));
        var inv = Enumerable.Range(0, Dim / 2).Select(i => 1.0 / (ext[i] * Math.Pow(Theta, 2.0 * i / Dim))).ToArray();
        return (inv, attention);
    }

    /// <summary>
    /// Reads rope_theta, partial_rotary_factor and rope_scaling (or the newer rope_parameters) the way the
    /// family's config class does. Phi3Config renames the legacy types su and yarn to longrope and takes
    /// original_max_position_embeddings from the top level (default 4096).
    /// </summary>
    internal static HfRope Read(JsonElement root, HfSpec.Fields top, string modelType, int headDim, int maxPositions, string source)
    {
        JsonElement? scaling = null;
        foreach (var name in new[] { "rope_scaling", "rope_parameters" })
            if (root.TryGetProperty(name, out var e) && e.ValueKind != JsonValueKind.Null)
            {
                if (e.ValueKind != JsonValueKind.Object) throw new FormatException($"{source}: {name} must be an object or null");
                scaling = e;
                break;
            }
        var s = scaling is { } el ? new HfSpec.Fields(el, source, "rope_scaling.") : null;
        // Gemma3TextConfig, SmolLM3Config and GptOssConfig default rope_theta to 1e6, 2e6 and 150000.
        double theta = s?.Double("rope_theta") ?? top.Double("rope_theta") ?? modelType switch { "gemma3_text" => 1e6, "smollm3" => 2e6, "gpt_oss" => 150000, _ => 10000 };
        // GptOssConfig: when config.json names no rope block, yarn with factor 32 over 4096 positions, truncate false.
        if (s is null && modelType == "gpt_oss")
            return new HfRope { Type = "yarn", Theta = theta, Dim = headDim, MaxPositions = maxPositions, Factor = 32, OriginalMaxPositions = 4096, Truncate = false };
        // PhiConfig's partial_rotary_factor defaults to 0.5; the other config classes rotate whole heads.
        double partial = s?.Double("partial_rotary_factor") ?? top.Double("partial_rotary_factor") ?? (modelType == "phi" ? 0.5 : 1);
        int dim = (int)(headDim * partial);
        if (dim < 2 || dim % 2 != 0) throw new FormatException($"{source}: head_dim ({headDim}) x partial_rotary_factor ({partial}) must give an even rotary dimension");

        string type = s?.String("rope_type") ?? s?.String("type") ?? "default";
        if (modelType == "phi3" && type is "su" or "yarn") type = "longrope";
        var rope = new HfRope { Type = type, Theta = theta, Dim = dim, MaxPositions = maxPositions };
        if (type == "default") return rope;
        var f = s!;
        switch (type)
        {
            case "linear" or "dynamic":
                return rope with { Factor = f.Double("factor") ?? throw f.Missing("factor") };
            case "llama3":
                return rope with
                {
                    Factor = f.Double("factor") ?? throw f.Missing("factor"),
                    OriginalMaxPositions = f.Int("original_max_position_embeddings") ?? throw f.Missing("original_max_position_embeddings"),
                    LowFreqFactor = f.Double("low_freq_factor") ?? throw f.Missing("low_freq_factor"),
                    HighFreqFactor = f.Double("high_freq_factor") ?? throw f.Missing("high_freq_factor"),
                };
            case "yarn":
                return rope with
                {
                    Factor = f.Double("factor") ?? throw f.Missing("factor"),
                    OriginalMaxPositions = f.Int("original_max_position_embeddings"),
                    AttentionFactor = f.Double("attention_factor"),
                    BetaFast = f.Double("beta_fast") is { } bf && bf != 0 ? bf : 32,
                    BetaSlow = f.Double("beta_slow") is { } bs && bs != 0 ? bs : 1,
                    Mscale = f.Double("mscale"),
                    MscaleAllDim = f.Double("mscale_all_dim"),
                    Truncate = f.Bool("truncate") ?? true,
                };
            case "longrope":
            {
                var shortFactor = f.DoubleList("short_factor") ?? throw f.Missing("short_factor");
                var longFactor = f.DoubleList("long_factor") ?? throw f.Missing("long_factor");
                if (shortFactor.Length != dim / 2 || longFactor.Length != dim / 2)
                    throw new FormatException($"{source}: rope_scaling.short_factor ({shortFactor.Length}) and long_factor ({longFactor.Length}) must each hold rotary_dim / 2 = {dim / 2} numbers");
                int original = top.Int("original_max_position_embeddings") ?? f.Int("original_max_position_embeddings")
                    ?? (modelType == "phi3" ? 4096 : maxPositions);
                return rope with
                {
                    OriginalMaxPositions = original,
                    AttentionFactor = f.Double("attention_factor"),
                    ShortFactor = shortFactor,
                    LongFactor = longFactor,
                };
            }
            default:
                throw new FormatException($"{source}: rope_scaling type '{type}' has no reference (default, linear, dynamic, yarn, llama3, longrope)");
        }
    }
}
