namespace OnnxDecoder.Runtime.Sampling.Processors;

/// <summary>Keeps the k most likely tokens.</summary>
public sealed class TopK(int k) : ILogitsProcessor
{
    public int K { get; } = k > 0 ? k : throw new ArgumentOutOfRangeException(nameof(k), k, "top-k must be positive (0 is off: no top-k step)");

    public void Process(TokenCandidates candidates, ReadOnlySpan<int> history)
    {
        _ = candidates.Order; // ordered probabilities required
        candidates.Keep(K);
    }
}
