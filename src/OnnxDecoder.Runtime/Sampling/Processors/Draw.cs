namespace OnnxDecoder.Runtime.Sampling.Processors;

/// <summary>The chain's last step: one uniform draw over the kept candidates' probability mass.</summary>
public sealed class Draw(Random random)
{
    public int Choose(TokenCandidates candidates)
    {
        var order = candidates.Order;
        var probabilities = candidates.Scores;
        int keep = candidates.Kept;
        double kept = 0;
        for (int k = 0; k < keep; k++) kept += probabilities[order[k]];
        double draw = random.NextDouble() * kept;
        for (int k = 0; k < keep; k++)
        {
            draw -= probabilities[order[k]];
            if (draw <= 0) return order[k];
        }
        return order[keep - 1];
    }
}
