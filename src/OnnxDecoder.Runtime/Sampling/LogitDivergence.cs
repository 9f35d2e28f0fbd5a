namespace OnnxDecoder.Runtime.Sampling;

/// <summary>How far apart two models' next-token distributions are, from their logit rows: the quality
/// figure `compare` and the benchmark report for a quantized export against its fp32 reference.</summary>
public static class LogitDivergence
{
    /// <summary>KL(P || Q) in nats of the softmax distributions of two logit rows [vocab] (log-sum-exp in double).</summary>
    public static double Kl(ReadOnlySpan<float> referenceLogits, ReadOnlySpan<float> modelLogits)
    {
        if (referenceLogits.Length != modelLogits.Length)
            throw new ArgumentException($"vocabularies differ: {referenceLogits.Length} reference logits against {modelLogits.Length}");
        double logZp = LogSumExp(referenceLogits), logZq = LogSumExp(modelLogits), kl = 0;
        for (int v = 0; v < referenceLogits.Length; v++)
        {
            double logP = referenceLogits[v] - logZp;
            if (double.IsNegativeInfinity(logP)) continue; // p = 0 adds nothing
            kl += Math.Exp(logP) * (logP - (modelLogits[v] - logZq));
        }
        return Math.Max(0, kl); // rounding can leave -1e-17 for equal rows
    }

    private static double LogSumExp(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (var l in logits) max = Math.Max(max, l);
        double sum = 0;
        foreach (var l in logits) sum += Math.Exp(l - max);
        return max + Math.Log(sum);
    }
}
