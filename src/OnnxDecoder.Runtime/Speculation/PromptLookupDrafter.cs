using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Runtime.Speculation;

/// <summary>
/// Prompt lookup: drafts the tokens that followed the most recent earlier occurrence of the context's
/// last n tokens (n from <see cref="MaxNgram"/> down to <see cref="MinNgram"/>). No model runs; pays
/// off where the output repeats its context (summaries, edits, code, a story continued from itself).
/// </summary>
public sealed class PromptLookupDrafter : IDrafter
{
    public PromptLookupDrafter(int minNgram = 2, int maxNgram = 3)
    {
        if (minNgram < 1 || maxNgram < minNgram)
            throw new ArgumentOutOfRangeException(nameof(minNgram), $"n-gram sizes {minNgram}..{maxNgram}: need 1 <= min <= max");
        MinNgram = minNgram;
        MaxNgram = maxNgram;
    }

    public int MinNgram { get; }
    public int MaxNgram { get; }
    public string Name => "ngram";
    public bool HasDistributions => false;

    public void Begin(DecoderSession target, SamplingOptions sampling) { }

    public int Draft(IReadOnlyList<int> context, Span<int> drafts, float[] distributions, CancellationToken cancellationToken)
    {
        int length = context.Count;
        for (int n = Math.Min(MaxNgram, length - 1); n >= MinNgram; n--)
        {
            // The latest earlier match predicts best: text repeats what it said last.
            for (int start = length - n - 1; start >= 0; start--)
            {
                int i = 0;
                while (i < n && context[start + i] == context[length - n + i]) i++;
                if (i < n) continue;
                int count = Math.Min(drafts.Length, length - (start + n));
                for (int j = 0; j < count; j++) drafts[j] = context[start + n + j];
                return count;
            }
        }
        return 0;
    }

    public void Keep(int length) { }
}
