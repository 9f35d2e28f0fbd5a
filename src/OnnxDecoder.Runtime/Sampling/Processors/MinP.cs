namespace OnnxDecoder.Runtime.Sampling.Processors;

/// <summary>Drops tokens less likely than min_p x the most likely one (the most likely one stays).</summary>
public sealed class MinP(float minP) : ILogitsProcessor
{
    public float Value { get; } = minP;

    public void Process(TokenCandidates candidates, ReadOnlySpan<int> history)
    {
        var order = candidates.Order;
        var probabilities = candidates.Scores;
        float floor = Value * probabilities[order[0]];
        int k = 1;
        while (k < candidates.Kept && probabilities[order[k]] >= floor) k++;
        candidates.Keep(k);
    }
}
