namespace OnnxDecoder.Runtime.Sampling;

/// <summary>
/// One row's candidates while the processor chain runs: first the logits, then (after
/// <see cref="ToProbabilities"/>) probabilities with the token ids in descending order of
/// probability, of which the first <see cref="Kept"/> are still candidates. The buffers are
/// allocated once per vocabulary size and reused for every token.
/// </summary>
public sealed class TokenCandidates
{
    private readonly float[] _scores;   // [vocab] logits, then probabilities
    private readonly int[] _order;      // [vocab] token ids by descending probability
    private readonly float[] _sortKeys; // [vocab] negated probabilities: Span.Sort sorts ascending

    public TokenCandidates(int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        _scores = new float[vocabSize];
        _order = new int[vocabSize];
        _sortKeys = new float[vocabSize];
    }

    /// <summary>Tokens of the current row (the logits' length).</summary>
    public int Length { get; private set; }
    /// <summary>Logits until <see cref="ToProbabilities"/>, probabilities after it.</summary>
    public Span<float> Scores => _scores.AsSpan(0, Length);
    public bool IsProbabilities { get; private set; }
    /// <summary>Token ids by descending probability; valid once <see cref="IsProbabilities"/>.</summary>
    public ReadOnlySpan<int> Order => IsProbabilities ? _order.AsSpan(0, Length) : throw new InvalidOperationException("candidates are ordered only after the temperature step");
    /// <summary>How many of <see cref="Order"/>'s leading tokens are still candidates.</summary>
    public int Kept { get; private set; }

    /// <summary>Starts a row: copies <paramref name="logits"/> in.</summary>
    public void Load(ReadOnlySpan<float> logits)
    {
        if (logits.Length > _scores.Length) throw new ArgumentException($"{logits.Length} logits for a vocabulary of {_scores.Length}", nameof(logits));
        if (logits.IsEmpty) throw new ArgumentException("no logits to choose from", nameof(logits));
        Length = logits.Length;
        logits.CopyTo(_scores);
        IsProbabilities = false;
        Kept = Length;
    }

    /// <summary>Softmax at <paramref name="temperature"/>, in place, then orders the tokens by
    /// descending probability (deterministic for the same input).</summary>
    public void ToProbabilities(float temperature)
    {
        if (IsProbabilities) throw new InvalidOperationException("the candidates already hold probabilities");
        var scores = Scores;
        float max = float.NegativeInfinity;
        foreach (var s in scores) max = Math.Max(max, s);
        double total = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            scores[i] = MathF.Exp((scores[i] - max) / temperature);
            total += scores[i];
        }
        for (int i = 0; i < scores.Length; i++) scores[i] = (float)(scores[i] / total);
        var order = _order.AsSpan(0, Length);
        var keys = _sortKeys.AsSpan(0, Length);
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = i;
            keys[i] = -scores[i];
        }
        keys.Sort(order);
        IsProbabilities = true;
        Kept = Length;
    }

    /// <summary>Keeps only the first <paramref name="count"/> candidates (never fewer than one, never more than kept now).</summary>
    public void Keep(int count) => Kept = Math.Clamp(count, 1, Kept);
}
