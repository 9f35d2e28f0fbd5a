namespace OnnxDecoder.Runtime.Sampling.Processors;

/// <summary>Softmax at the temperature: logits become probabilities, ordered most likely first,
/// which the cuts after it (top-k, min-p, top-p) and the draw rely on.</summary>
public sealed class Temperature(float temperature) : ILogitsProcessor
{
    public float Value { get; } = temperature > 0 && float.IsFinite(temperature) ? temperature
        : throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "a sampling temperature must be positive (0 is greedy: no temperature step)");

    public void Process(TokenCandidates candidates, ReadOnlySpan<int> history) => candidates.ToProbabilities(Value);
}
