namespace OnnxDecoder.Modeling.Quantization;

/// <summary>
/// One block of weights x quantized to integer levels q in [0, 2^b - 1] with one scale d and an integer zero
/// point z, so that x ~ d (q - z). <see cref="Plain"/> is the round-to-nearest rule from the block's range
/// (ggml's Q4_0 / Q8_0 for symmetric blocks); <see cref="Search"/> keeps the (d, z) of least squared
/// reconstruction error sum (x - d (q - z))^2 over a set of candidates that contains the plain rule's, so it is
/// never worse than that rule. Written from the least-squares conditions: for fixed levels q the best scale is
/// d = sum(x (q - z)) / sum((q - z)^2); rounding x / d again for that d can only lower the error, and the two
/// steps alternate until the error stops falling.
/// </summary>
internal static class BlockScaleSearch
{
    /// <summary>The extreme element is mapped to this fraction of the full range, on a grid that allows a few
    /// outliers to clip (below 1) and the range to grow a little (above 1) where the rounding then fits better.</summary>
    private const float GridLow = 0.70f, GridHigh = 1.10f;
    private const int GridSteps = 20;
    private const int Refinements = 3;

    /// <summary>The plain rule: symmetric 8-bit d = max|x| / 127; symmetric 4-bit d = -m / 8 for m the element of
    /// largest magnitude (all 16 levels, the extreme at -8 steps); asymmetric: the range [min, max] widened to hold
    /// 0 onto [0, 2^b - 1] with a rounded zero point. Returns the squared error.</summary>
    public static double Plain(ReadOnlySpan<float> x, int bits, bool symmetric, Span<int> q, out float scale, out int zero)
    {
        int levels = (1 << bits) - 1, half = 1 << (bits - 1);
        if (symmetric && bits == 4)
        {
            float extreme = 0;
            foreach (var v in x) if (Math.Abs(v) > Math.Abs(extreme)) extreme = v;
            (scale, zero) = (extreme / -half, half);
        }
        else if (symmetric)
        {
            float max = 0;
            foreach (var v in x) max = Math.Max(max, Math.Abs(v));
            (scale, zero) = (max / (half - 1), half);
        }
        else
        {
            float min = 0, max = 0;
            foreach (var v in x) { min = Math.Min(min, v); max = Math.Max(max, v); }
            scale = (max - min) / levels;
            zero = scale == 0 ? 0 : Math.Clamp((int)MathF.Round(-min / scale), 0, levels);
        }
        return Round(x, scale, zero, levels, q);
    }

    /// <summary>The least-error (scale, zero point) found; q receives its levels (trial and spare are scratch of
    /// x's length). Returns the squared error.</summary>
    public static double Search(ReadOnlySpan<float> x, int bits, bool symmetric, Span<int> q, Span<int> trial, Span<int> spare, out float scale, out int zero)
    {
        int levels = (1 << bits) - 1, half = 1 << (bits - 1);
        double best = Plain(x, bits, symmetric, q, out scale, out zero);
        if (best == 0) return 0;
        float bestScale = scale;
        int bestZero = zero;

        void Try(float d, int z, Span<int> q, Span<int> trial, Span<int> spare, ReadOnlySpan<float> x)
        {
            if (d == 0 || !float.IsFinite(d) || !float.IsFinite(1 / d)) return;
            double error = Round(x, d, z, levels, trial);
            for (int pass = 0; pass < Refinements; pass++)
            {
                // The least-squares scale for these levels (zero point fixed) can only lower the error ...
                double xq = 0, qq = 0;
                for (int i = 0; i < x.Length; i++) { int l = trial[i] - z; xq += x[i] * (double)l; qq += (double)l * l; }
                if (qq == 0) break;
                float refined = (float)(xq / qq);
                if (refined == d || refined == 0 || !float.IsFinite(1 / refined)) break;
                double refinedError = ErrorOf(x, refined, z, trial);
                if (refinedError >= error) break;
                (d, error) = (refined, refinedError);
                // ... and so can rounding again for that scale, which usually lowers it further.
                double rounded = Round(x, d, z, levels, spare);
                if (rounded >= error) break;
                error = rounded;
                spare.CopyTo(trial);
            }
            if (error < best)
            {
                best = error;
                (bestScale, bestZero) = (d, z);
                trial.CopyTo(q);
            }
        }

        if (symmetric)
        {
            // The extreme m on the negative side (m / d = -2^(b-1)) or the positive side (m / d = 2^(b-1) - 1).
            float extreme = 0;
            foreach (var v in x) if (Math.Abs(v) > Math.Abs(extreme)) extreme = v;
            // 8-bit steps are fine enough that clipping outliers never pays: a narrow grid around the plain rule.
            float low = bits == 8 ? 0.95f : GridLow, high = bits == 8 ? 1.05f : GridHigh;
            for (int s = 0; s <= GridSteps; s++)
            {
                float fraction = low + (high - low) * s / GridSteps;
                Try(extreme / (-half * fraction), half, q, trial, spare, x);
                Try(extreme / ((half - 1) * fraction), half, q, trial, spare, x);
            }
        }
        else
        {
            float min = float.MaxValue, max = float.MinValue;
            foreach (var v in x) { min = Math.Min(min, v); max = Math.Max(max, v); }
            float range = max - min;
            for (int s = 0; s <= GridSteps; s++)
            {
                // A narrower range clips the outliers on either end, or on both alike.
                float width = range * (GridLow + (1 - GridLow) * s / GridSteps);
                foreach (float low in new[] { min, max - width, min + (range - width) / 2 })
                {
                    float d = width / levels;
                    if (d == 0) continue;
                    Try(d, Math.Clamp((int)MathF.Round(-low / d), 0, levels), q, trial, spare, x);
                }
            }
        }
        (scale, zero) = (bestScale, bestZero);
        return best;
    }

    /// <summary>q = clamp(round(x / d) + z) (by the reciprocal, as the plain rule computes it); the squared error of d (q - z).</summary>
    private static double Round(ReadOnlySpan<float> x, float scale, int zero, int levels, Span<int> q)
    {
        float inverse = scale == 0 ? 0 : 1 / scale;
        for (int i = 0; i < x.Length; i++) q[i] = Math.Clamp((int)MathF.Round(x[i] * inverse) + zero, 0, levels);
        return ErrorOf(x, scale, zero, q);
    }

    /// <summary>sum (x - d (q - z))^2, with d (q - z) rounded to float as the dequantizer computes it.</summary>
    public static double ErrorOf(ReadOnlySpan<float> x, float scale, int zero, ReadOnlySpan<int> q)
    {
        double error = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double e = x[i] - scale * (float)(q[i] - zero);
            error += e * e;
        }
        return error;
    }
}
