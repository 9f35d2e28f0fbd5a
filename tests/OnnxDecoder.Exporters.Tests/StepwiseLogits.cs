using OnnxDecoder.Runtime;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>An exported folder read position by position through the runtime's KV cache, against a reference's logits.</summary>
internal static class StepwiseLogits
{
    /// <summary>Max |our logits - expected| over every position of ids [1, T]: the first token appended, then one step a
    /// token; expected holds the reference's logits [T, vocab] for the same ids.</summary>
    public static float MaxDifference(string modelFolder, long[,] ids, float[] expected, int vocab)
    {
        int length = ids.GetLength(1);
        using var session = new DecoderSession(modelFolder);
        float max = 0;
        var logits = session.Append([ids[0, 0]], 1);
        for (int t = 0; ; t++)
        {
            for (int v = 0; v < vocab; v++) max = Math.Max(max, Math.Abs(logits[v] - expected[t * vocab + v]));
            if (t == length - 1) return max;
            logits = session.Step([ids[0, t + 1]]);
        }
    }
}
