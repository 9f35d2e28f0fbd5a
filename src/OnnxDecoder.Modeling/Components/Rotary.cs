using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>
/// Rotary position embeddings: the frequency tables for every scaling type, and their application
/// to q and k in either pair layout. Static scalings become cos/sin tables [max_length, rot/2]; the
/// dynamic (NTK) scaling depends on the longest position in the call, so its tables are computed
/// in the graph.
/// </summary>
public static class Rotary
{
    /// <summary>Frequencies [rot/2] and the cos/sin multiplier (yarn's attention factor, else 1).</summary>
    /// <paramref name="longFactors"/>: longrope's long_factor (past original_max_position_embeddings) rather than short_factor.
    public static (double[] InverseFrequencies, double Multiplier) Frequencies(DecoderConfig config, bool longFactors = false)
    {
        int rot = config.RotaryDim;
        var inv = new double[rot / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / rot);
        var s = config.RopeScaling;
        switch (s.Type)
        {
            case RopeScalingType.Linear:
                for (int i = 0; i < inv.Length; i++) inv[i] /= s.Factor;
                return (inv, 1);
            case RopeScalingType.Llama3:
            {
                double original = s.OriginalMaxPositions!.Value;
                double lowWavelength = original / s.LowFreqFactor, highWavelength = original / s.HighFreqFactor;
                for (int i = 0; i < inv.Length; i++)
                {
                    double wavelength = 2 * Math.PI / inv[i];
                    if (wavelength > lowWavelength) inv[i] /= s.Factor;           // low frequencies: interpolate
                    else if (wavelength >= highWavelength)                       // medium: blend
                    {
                        double smooth = (original / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                        inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
                    }
                }
                return (inv, 1);
            }
            case RopeScalingType.LongRope:
            {
                // inv_freq[i] = 1 / (factor[i] theta^(2i/rot)); cos and sin scaled by the attention factor,
                // sqrt(1 + ln(s) / ln(original)) with s = max_position_embeddings / original (1 when s <= 1).
                var factors = (longFactors ? s.LongFactor : s.ShortFactor)!;
                for (int i = 0; i < inv.Length; i++) inv[i] /= factors[i];
                double original = s.OriginalMaxPositions!.Value, scale = config.MaxPositions / original;
                return (inv, s.AttentionFactor ?? (scale <= 1 ? 1 : Math.Sqrt(1 + Math.Log(scale) / Math.Log(original))));
            }
            case RopeScalingType.Yarn:
            {
                double original = s.OriginalMaxPositions ?? config.MaxPositions;
                double CorrectionDim(double rotations) => rot * Math.Log(original / (rotations * 2 * Math.PI)) / (2 * Math.Log(config.RopeTheta));
                double low = CorrectionDim(s.BetaFast), high = CorrectionDim(s.BetaSlow);
                if (s.Truncate) (low, high) = (Math.Floor(low), Math.Ceiling(high));
                low = Math.Max(low, 0);
                high = Math.Min(high, rot - 1);
                if (low == high) high += 0.001;
                for (int i = 0; i < inv.Length; i++)
                {
                    double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
                    double extrapolationWeight = 1 - ramp;
                    inv[i] = inv[i] / s.Factor * (1 - extrapolationWeight) + inv[i] * extrapolationWeight;
                }
                double multiplier = s.AttentionFactor ?? (s.Factor <= 1 ? 1 : 0.1 * Math.Log(s.Factor) + 1);
                return (inv, multiplier);
            }
            default:
                return (inv, 1);
        }
    }

    /// <summary>cos and sin tables [maxLength, rot/2] for the static scaling types.</summary>
    public static (float[] Cos, float[] Sin) Tables(DecoderConfig config, int maxLength, bool longFactors = false)
    {
        var (inv, multiplier) = Frequencies(config, longFactors);
        var cos = new float[maxLength * inv.Length];
        var sin = new float[maxLength * inv.Length];
        for (int p = 0; p < maxLength; p++)
            for (int i = 0; i < inv.Length; i++)
            {
                double angle = p * inv[i];
                cos[p * inv.Length + i] = (float)(Math.Cos(angle) * multiplier);
                sin[p * inv.Length + i] = (float)(Math.Sin(angle) * multiplier);
            }
        return (cos, sin);
    }

    public static bool IsDynamic(DecoderConfig config) => config.RopeScaling.Type == RopeScalingType.Dynamic;

    /// <summary>The cos/sin caches as initializers [max_length, rot/2] (static scalings only); <see cref="DecoderGraph.RotaryCaches"/> keeps them.</summary>
    internal static (Value Cos, Value Sin) Caches(DecoderGraph g)
    {
        if (g.Config.RopeScaling.Type != RopeScalingType.LongRope) return CacheInitializers(g, g.Config, "", longFactors: false);
        // LongRope: the long factors serve calls whose longest position reaches past original_max_position_embeddings.
        //   max(position_ids) + 1 > original ─Where─ long tables : short tables   [max_length, rot/2]
        var (shortCos, shortSin) = CacheInitializers(g, g.Config, "_short", longFactors: false);
        var (longCos, longSin) = CacheInitializers(g, g.Config, "_long", longFactors: true);
        var b = g.B;
        using var scope = b.Scope("rotary");
        var longest = b.Op("Add", [b.Op("ReduceMax", [g.PositionIds], Attr.Int("keepdims", 0)), b.Int64Scalar(1)]);
        int original = g.Config.RopeScaling.OriginalMaxPositions!.Value;
        var useLong = b.Op("Greater", [longest, b.Int64Scalar(original)]);
        // The choice is per call: the runtime reads the switch to keep cached keys on the side of the call that reads them.
        b.Metadata(GraphContract.Metadata.LongRopeSwitch, original.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return (b.Op("Where", [useLong, longCos, shortCos]), b.Op("Where", [useLong, longSin, shortSin]));
    }

    /// <summary>The local rotary's caches [max_length, rot/2]: base <see cref="DecoderConfig.LocalRopeTheta"/>, no scaling
    /// (Gemma 3's sliding layers); <see cref="DecoderGraph.LocalRotaryCaches"/> keeps them.</summary>
    internal static (Value Cos, Value Sin) LocalCaches(DecoderGraph g) =>
        CacheInitializers(g, LocalConfig(g.Config), "_local", longFactors: false);

    private static DecoderConfig LocalConfig(DecoderConfig c) => c with { RopeTheta = c.LocalRopeTheta!.Value, RopeScaling = new RopeScaling() };

    private static (Value Cos, Value Sin) CacheInitializers(DecoderGraph g, DecoderConfig config, string suffix, bool longFactors)
    {
        var (cos, sin) = Tables(config, g.MaxLength, longFactors);
        int half = config.RotaryDim / 2;
        if (g.Float16) // the tables are in the activation type (RotaryEmbedding requires it)
            return (g.B.Initializer("cos_cache" + suffix, TensorData.From<Half>(cos.Select(v => (Half)v).ToArray(), g.MaxLength, half)),
                    g.B.Initializer("sin_cache" + suffix, TensorData.From<Half>(sin.Select(v => (Half)v).ToArray(), g.MaxLength, half)));
        return (g.B.Initializer("cos_cache" + suffix, TensorData.From<float>(cos, g.MaxLength, half)),
                g.B.Initializer("sin_cache" + suffix, TensorData.From<float>(sin, g.MaxLength, half)));
    }

    /// <summary>cos and sin for each position of the call, [B, S, 1, rot/2]; <see cref="DecoderGraph.RotaryPerPosition"/> keeps them.</summary>
    internal static (Value Cos, Value Sin) PerPosition(DecoderGraph g, bool local = false)
    {
        var b = g.B;
        using var scope = b.Scope("rotary");
        if (local || !IsDynamic(g.Config))
        {
            var (cosCache, sinCache) = local ? g.LocalRotaryCaches : g.RotaryCaches;
            var cos = b.Op("Unsqueeze", [b.Op("Gather", [cosCache, g.PositionIds], Attr.Int("axis", 0)), b.Int64s(2)]); // [B, S, 1, rot/2]
            var sin = b.Op("Unsqueeze", [b.Op("Gather", [sinCache, g.PositionIds], Attr.Int("axis", 0)), b.Int64s(2)]);
            return (cos, sin);
        }

        // Dynamic NTK: L = max(max(position_ids) + 1, max_position_embeddings);
        // base' = theta * (factor * L / max_pos - (factor - 1)) ^ (rot / (rot - 2));
        // inv_freq[i] = base' ^ (-2i / rot) = exp(-(2i / rot) * ln base')
        int rot = g.Config.RotaryDim;
        double factor = g.Config.RopeScaling.Factor, maxPositions = g.Config.MaxPositions;
        var longest = b.Op("Cast", [b.Op("Add", [b.Op("ReduceMax", [g.PositionIds], Attr.Int("keepdims", 0)), b.Int64Scalar(1)])], Attr.Int("to", (int)ElementType.Float));
        var length = b.Op("Max", [longest, b.FloatScalar((float)maxPositions)]);
        var ratio = b.Op("Sub", [b.Op("Mul", [length, b.FloatScalar((float)(factor / maxPositions))]), b.FloatScalar((float)(factor - 1))]);
        var logBase = b.Op("Add", [b.FloatScalar((float)Math.Log(g.Config.RopeTheta)), b.Op("Mul", [b.Op("Log", [ratio]), b.FloatScalar((float)rot / (rot - 2))])]);
        var exponents = new float[rot / 2];
        for (int i = 0; i < exponents.Length; i++) exponents[i] = -2f * i / rot;
        var inverseFrequencies = b.Op("Exp", [b.Op("Mul", [b.Constant<float>(exponents, exponents.Length), logBase])]);   // [rot/2]
        var positions = b.Op("Unsqueeze", [b.Op("Cast", [g.PositionIds], Attr.Int("to", (int)ElementType.Float)), b.Int64s(-1)]); // [B, S, 1]
        var angles = b.Op("Unsqueeze", [b.Op("Mul", [positions, inverseFrequencies]), b.Int64s(2)]);                          // [B, S, 1, rot/2]
        return (g.FromFloat32(b.Op("Cos", [angles])), g.FromFloat32(b.Op("Sin", [angles])));
    }

    /// <summary>Rotates x [B, S, heads, head_dim] with standard ops; both layouts, partial rotary.</summary>
    /// <paramref name="local"/>: the local rotary of sliding layers rather than the config's.
    public static Value ApplyPortable(DecoderGraph g, Value x, bool local = false)
    {
        var b = g.B;
        int rot = g.Config.RotaryDim, half = rot / 2, headDim = g.Config.HeadDim;
        var (cos, sin) = local ? g.LocalRotaryPerPosition : g.RotaryPerPosition;
        Value Slice(Value v, long start, long end, long axis) => b.Op("Slice", [v, b.Int64s(start), b.Int64s(end), b.Int64s(axis)]);

        var rotated = rot < headDim ? Slice(x, 0, rot, 3) : x;           // [B, S, h, rot]
        Value result;
        if (g.Config.RotaryLayout == RotaryLayout.HalfSplit)
        {
            var first = Slice(rotated, 0, half, 3);                      // [B, S, h, rot/2]
            var second = Slice(rotated, half, rot, 3);
            var outFirst = b.Op("Sub", [b.Op("Mul", [first, cos]), b.Op("Mul", [second, sin])]);
            var outSecond = b.Op("Add", [b.Op("Mul", [second, cos]), b.Op("Mul", [first, sin])]);
            result = b.Op("Concat", [outFirst, outSecond], Attr.Int("axis", 3));
        }
        else
        {
            var pairs = b.Op("Reshape", [rotated, b.Int64s(0, 0, 0, half, 2)]);   // [B, S, h, rot/2, 2]
            var even = Slice(pairs, 0, 1, 4);                                       // [B, S, h, rot/2, 1]
            var odd = Slice(pairs, 1, 2, 4);
            var cos5 = b.Op("Unsqueeze", [cos, b.Int64s(4)]);                       // [B, S, 1, rot/2, 1]
            var sin5 = b.Op("Unsqueeze", [sin, b.Int64s(4)]);
            var outEven = b.Op("Sub", [b.Op("Mul", [even, cos5]), b.Op("Mul", [odd, sin5])]);
            var outOdd = b.Op("Add", [b.Op("Mul", [odd, cos5]), b.Op("Mul", [even, sin5])]);
            result = b.Op("Reshape", [b.Op("Concat", [outEven, outOdd], Attr.Int("axis", 4)), b.Int64s(0, 0, 0, rot)]);
        }
        return rot < headDim ? b.Op("Concat", [result, Slice(x, rot, headDim, 3)], Attr.Int("axis", 3)) : result;
    }

    /// <summary>Rotates x [B, S, heads * head_dim] with com.microsoft RotaryEmbedding (static scalings).</summary>
    public static Value ApplyOrt(DecoderGraph g, Value x, int heads, bool local = false)
    {
        var (cos, sin) = local ? g.LocalRotaryCaches : g.RotaryCaches;
        var attributes = new List<Attr>
        {
            Attr.Int("interleaved", g.Config.RotaryLayout == RotaryLayout.Interleaved ? 1 : 0),
            Attr.Int("num_heads", heads),
        };
        if (g.Config.RotaryDim < g.Config.HeadDim) attributes.Add(Attr.Int("rotary_embedding_dim", g.Config.RotaryDim));
        return g.B.MsOp("RotaryEmbedding", [x, g.PositionIds, cos, sin], [.. attributes]);
    }
}
