using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Runtime.Speculation;

/// <summary>
/// Proposes tokens that the target model then verifies in one run (speculative decoding).
/// A drafter serves one <see cref="Generator"/> at a time.
/// </summary>
public interface IDrafter
{
    /// <summary>Shown in statistics and errors ("ngram", a model folder).</summary>
    string Name { get; }

    /// <summary>Whether <see cref="Draft"/> writes the distribution each token was drawn from; false: every
    /// draft is a point mass (the verifier then accepts a token with the target's probability of it).</summary>
    bool HasDistributions { get; }

    /// <summary>Called once per generation before the first draft; refuses a target it cannot serve.</summary>
    void Begin(DecoderSession target, SamplingOptions sampling);

    /// <summary>
    /// Proposes up to <paramref name="drafts"/>.Length tokens that follow <paramref name="context"/> (every
    /// token of the sequence, the last one not yet run through the target) and returns how many. With
    /// <see cref="HasDistributions"/>, row i of <paramref name="distributions"/> [drafts, vocab] receives the
    /// distribution draft i was drawn from.
    /// </summary>
    int Draft(IReadOnlyList<int> context, Span<int> drafts, float[] distributions, CancellationToken cancellationToken);

    /// <summary>After verification: the first <paramref name="length"/> tokens of the context are final; anything
    /// the drafter cached beyond them is to be forgotten.</summary>
    void Keep(int length);
}

/// <summary>How many drafts were proposed and how many the target accepted.</summary>
public sealed record SpeculationStats(string Drafter, int Rounds, int Drafted, int Accepted)
{
    /// <summary>Accepted drafts over proposed ones (0 when nothing was proposed).</summary>
    public double AcceptanceRate => Drafted > 0 ? (double)Accepted / Drafted : 0;
}

/// <summary>Speculative decoding for one generation. Constrained generation (<see cref="GenerationOptions.Constraint"/>)
/// decodes without speculation: the grammar would have to vet every draft, and the gain there is small.</summary>
public sealed record SpeculationOptions
{
    public required IDrafter Drafter { get; init; }
    /// <summary>Tokens drafted per round at most (k): one target run verifies k + 1 positions.</summary>
    public int DraftTokens { get; init; } = 3;
    /// <summary>After this many rounds in a row with no accepted draft, drafting pauses (1, 2, 4 ... 32 plain
    /// steps), so a workload the drafter cannot predict pays little for it.</summary>
    public int MissesBeforePause { get; init; } = 2;
}
