namespace OnnxDecoder.Runtime.Sampling.Processors;

/// <summary>CTRL's repetition penalty: each distinct token already in the sequence has a positive
/// logit divided by the penalty and a negative one multiplied by it. Works on logits.</summary>
public sealed class RepetitionPenalty(float penalty, int vocabSize) : ILogitsProcessor
{
    private readonly bool[] _seen = new bool[vocabSize]; // [vocab] penalised already in this row

    public float Penalty { get; } = penalty;

    public void Process(TokenCandidates candidates, ReadOnlySpan<int> history)
    {
        if (candidates.IsProbabilities) throw new InvalidOperationException("the repetition penalty rescales logits: put it before the temperature step");
        var scores = candidates.Scores;
        foreach (int id in history)
        {
            if ((uint)id >= (uint)scores.Length || _seen[id]) continue;
            _seen[id] = true;
            scores[id] = scores[id] > 0 ? scores[id] / Penalty : scores[id] * Penalty;
        }
        foreach (int id in history) if ((uint)id < (uint)_seen.Length) _seen[id] = false;
    }
}
