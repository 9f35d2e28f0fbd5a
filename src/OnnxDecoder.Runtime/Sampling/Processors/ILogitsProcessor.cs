namespace OnnxDecoder.Runtime.Sampling.Processors;

/// <summary>
/// One step of the sampling chain (<see cref="Sampler"/>): rescales a row's logits, turns them into
/// ordered probabilities, or cuts the candidates. Runs once per token, so it must not allocate.
/// </summary>
public interface ILogitsProcessor
{
    /// <param name="history">Every token the sequence holds so far (prompt and generated).</param>
    void Process(TokenCandidates candidates, ReadOnlySpan<int> history);
}
