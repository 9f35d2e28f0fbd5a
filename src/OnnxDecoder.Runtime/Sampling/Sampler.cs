using OnnxDecoder.Runtime.Sampling.Processors;

namespace OnnxDecoder.Runtime.Sampling;

/// <summary>
/// Chooses tokens from logits through a chain of processors built once from the options:
/// repetition penalty, then (unless greedy) temperature, top-k, min-p and top-p, then the draw
/// (greedy: the arg-max). A constraint (<see cref="Constraints.ILogitsConstraint"/>) masks the
/// logits before the chain. All scratch memory is allocated once per vocabulary size, so a decode
/// step allocates nothing here.
/// </summary>
public sealed class Sampler
{
    private readonly ILogitsProcessor[] _chain;
    private readonly TokenCandidates _candidates;
    private readonly Draw? _draw; // null: greedy
    private readonly Random? _random; // the draw's source; speculative verification draws from it too

    public Sampler(SamplingOptions options, int vocabSize)
    {
        options.Validate();
        _candidates = new TokenCandidates(vocabSize);
        var chain = new List<ILogitsProcessor>();
        if (options.RepetitionPenalty != 1) chain.Add(new RepetitionPenalty(options.RepetitionPenalty, vocabSize));
        if (!options.IsGreedy)
        {
            chain.Add(new Temperature(options.Temperature));
            if (options.TopK > 0) chain.Add(new TopK(options.TopK));
            if (options.MinP > 0) chain.Add(new MinP(options.MinP));
            if (options.TopP < 1) chain.Add(new TopP(options.TopP));
            _random = options.Seed is { } seed ? new Random(seed) : new Random();
            _draw = new Draw(_random);
        }
        _chain = [.. chain];
    }

    /// <summary>The processors in the order they run.</summary>
    public IReadOnlyList<ILogitsProcessor> Processors => _chain;

    /// <summary>The next token for one row's logits; <paramref name="history"/> feeds the repetition penalty.</summary>
    public int Next(ReadOnlySpan<float> logits, ReadOnlySpan<int> history = default)
    {
        if (_chain.Length == 0) return ArgMax(logits); // greedy with nothing to rescale: no copy
        _candidates.Load(logits);
        foreach (var processor in _chain) processor.Process(_candidates, history);
        return _draw is null ? ArgMax(_candidates.Scores) : _draw.Choose(_candidates);
    }

    public bool IsGreedy => _draw is null;

    /// <summary>
    /// The distribution <see cref="Next"/> draws from, written dense into <paramref name="probabilities"/>
    /// [vocab]: the kept candidates' probabilities renormalised, zero elsewhere; greedy: a point mass on
    /// the arg-max. Speculative verification compares these for the target and the draft.
    /// </summary>
    public void Distribution(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, Span<float> probabilities)
    {
        if (probabilities.Length != logits.Length) throw new ArgumentException($"{probabilities.Length} probabilities for {logits.Length} logits", nameof(probabilities));
        probabilities.Clear();
        if (_draw is null)
        {
            probabilities[Next(logits, history)] = 1;
            return;
        }
        _candidates.Load(logits);
        foreach (var processor in _chain) processor.Process(_candidates, history);
        var order = _candidates.Order;
        var scores = _candidates.Scores;
        double kept = 0;
        for (int k = 0; k < _candidates.Kept; k++) kept += scores[order[k]];
        for (int k = 0; k < _candidates.Kept; k++) probabilities[order[k]] = (float)(scores[order[k]] / kept);
    }

    /// <summary>A uniform draw in [0, 1) from the sampler's seeded source (sampling only).</summary>
    public double NextUniform() => (_random ?? throw new InvalidOperationException("a greedy sampler draws nothing")).NextDouble();

    /// <summary>Draws a token from dense non-negative <paramref name="weights"/> (not necessarily normalised).</summary>
    public int Choose(ReadOnlySpan<float> weights)
    {
        double total = 0;
        foreach (var w in weights) total += w;
        if (!(total > 0)) throw new ArgumentException("every weight is zero", nameof(weights));
        double draw = NextUniform() * total;
        int last = 0;
        for (int i = 0; i < weights.Length; i++)
        {
            if (weights[i] <= 0) continue;
            last = i;
            draw -= weights[i];
            if (draw < 0) return i;
        }
        return last;
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
