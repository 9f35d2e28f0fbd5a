namespace OnnxDecoder.Runtime.Sampling.Processors;

/// <summary>Nucleus cut: keeps the smallest run of most likely tokens whose probability reaches p
/// (p = 0 keeps the most likely token alone).</summary>
public sealed class TopP(float topP) : ILogitsProcessor
{
    public float Value { get; } = topP;

    public void Process(TokenCandidates candidates, ReadOnlySpan<int> history)
    {
        var order = candidates.Order;
        var probabilities = candidates.Scores;
        double mass = 0;
        int k = 0;
        while (k < candidates.Kept)
        {
            mass += probabilities[order[k]];
            k++;
            if (mass >= Value - 1e-6) break; // float sums of probabilities land a hair below p
        }
        candidates.Keep(k);
    }
}
