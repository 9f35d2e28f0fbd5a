namespace OnnxDecoder.Runtime.Sampling;

/// <summary>How the next token is chosen. Temperature 0 (or top-k 1) is greedy.</summary>
public sealed record SamplingOptions
{
    public float Temperature { get; init; }
    /// <summary>Keep the k most likely tokens (0: all).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of tokens whose probability reaches p (1: all).</summary>
    public float TopP { get; init; } = 1;
    /// <summary>Drop tokens less likely than min_p x the most likely one (0: none).</summary>
    public float MinP { get; init; }
    /// <summary>CTRL-style penalty on tokens already in the sequence (1: none).</summary>
    public float RepetitionPenalty { get; init; } = 1;
    /// <summary>Same seed, same tokens. Null: a random seed.</summary>
    public int? Seed { get; init; }

    public bool IsGreedy => Temperature <= 0 || TopK == 1;

    public SamplingOptions Validate()
    {
        if (!float.IsFinite(Temperature) || Temperature < 0) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "temperature must be 0 (greedy) or positive");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "top-k must be 0 (off) or positive");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "top-p must be in (0, 1]");
        if (!(MinP >= 0 && MinP < 1)) throw new ArgumentOutOfRangeException(nameof(MinP), MinP, "min-p must be in [0, 1)");
        if (!(RepetitionPenalty > 0) || !float.IsFinite(RepetitionPenalty)) throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "repetition penalty must be positive");
        return this;
    }
}

/// <summary>
/// Chooses tokens from logits. All scratch memory is allocated once per vocabulary size, so a
/// decode step allocates nothing here.
/// </summary>
public sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly Random _random;
    private readonly float[] _scores;
    private readonly int[] _order;
    private readonly float[] _sortKeys;
    private readonly bool[] _seen;

    public Sampler(SamplingOptions options, int vocabSize)
    {
        _options = options.Validate();
        _random = options.Seed is { } seed ? new Random(seed) : new Random();
        _scores = new float[vocabSize];
        _order = new int[vocabSize];
        _sortKeys = new float[vocabSize];
        _seen = new bool[vocabSize];
    }

    /// <summary>The next token for one row's logits; <paramref name="history"/> feeds the repetition penalty.</summary>
    public int Next(ReadOnlySpan<float> logits, ReadOnlySpan<int> history = default)
    {
        if (_options.IsGreedy && _options.RepetitionPenalty == 1) return ArgMax(logits); // nothing to rescale: no copy
        var scores = _scores.AsSpan(0, logits.Length);
        logits.CopyTo(scores);
        if (_options.RepetitionPenalty != 1)
        {
            foreach (int id in history)
            {
                if ((uint)id >= (uint)scores.Length || _seen[id]) continue;
                _seen[id] = true;
                scores[id] = scores[id] > 0 ? scores[id] / _options.RepetitionPenalty : scores[id] * _options.RepetitionPenalty;
            }
            foreach (int id in history) if ((uint)id < (uint)_seen.Length) _seen[id] = false;
        }
        if (_options.IsGreedy) return ArgMax(scores);

        // Softmax at the temperature, in place.
        float max = float.NegativeInfinity;
        foreach (var s in scores) max = Math.Max(max, s);
        double total = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            scores[i] = MathF.Exp((scores[i] - max) / _options.Temperature);
            total += scores[i];
        }
        for (int i = 0; i < scores.Length; i++) scores[i] = (float)(scores[i] / total);

        // Candidates by descending probability, then cut by top-k, min-p and top-p.
        var order = _order.AsSpan(0, scores.Length);
        var keys = _sortKeys.AsSpan(0, scores.Length);
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = i;
            keys[i] = -scores[i];
        }
        keys.Sort(order); // by descending probability; deterministic for the same input
        int keep = _options.TopK > 0 ? Math.Min(_options.TopK, order.Length) : order.Length;
        if (_options.MinP > 0)
        {
            float floor = _options.MinP * scores[order[0]];
            int k = 1;
            while (k < keep && scores[order[k]] >= floor) k++;
            keep = k;
        }
        if (_options.TopP < 1)
        {
            double mass = 0;
            int k = 0;
            while (k < keep)
            {
                mass += scores[order[k]];
                k++;
                if (mass >= _options.TopP - 1e-6) break; // float sums of probabilities land a hair below p
            }
            keep = k;
        }

        double kept = 0;
        for (int k = 0; k < keep; k++) kept += scores[order[k]];
        double draw = _random.NextDouble() * kept;
        for (int k = 0; k < keep; k++)
        {
            draw -= scores[order[k]];
            if (draw <= 0) return order[k];
        }
        return order[keep - 1];
    }

    /// <summary>Index of the largest value; the first one on ties (as llama2.c's argmax).</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty) throw new ArgumentException("no logits to choose from", nameof(values));
        // Vectorised maximum, then the first index holding it (NaN logits fall back to the plain scan).
        float max = System.Numerics.Tensors.TensorPrimitives.Max(values);
        if (!float.IsNaN(max)) return values.IndexOf(max);
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
