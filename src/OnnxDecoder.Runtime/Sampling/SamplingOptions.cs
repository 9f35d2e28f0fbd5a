namespace OnnxDecoder.Runtime.Sampling;

/// <summary>How the next token is chosen. Temperature 0 (or top-k 1) is greedy. Ranges and defaults
/// are those of <see cref="SamplingParameters"/>.</summary>
public sealed record SamplingOptions
{
    public float Temperature { get; init; }
    /// <summary>Keep the k most likely tokens (0: all).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of tokens whose probability reaches p (1: all).</summary>
    public float TopP { get; init; } = 1;
    /// <summary>Drop tokens less likely than min_p x the most likely one (0: none).</summary>
    public float MinP { get; init; }
    /// <summary>CTRL-style penalty on tokens already in the sequence (1: none).</summary>
    public float RepetitionPenalty { get; init; } = 1;
    /// <summary>Same seed, same tokens. Null: a random seed.</summary>
    public int? Seed { get; init; }

    public bool IsGreedy => Temperature <= 0 || TopK == 1;

    /// <summary>Checks every value against <see cref="SamplingParameters"/>; an out-of-range value
    /// throws <see cref="ArgumentOutOfRangeException"/> naming the parameter.</summary>
    public SamplingOptions Validate()
    {
        foreach (var parameter in SamplingParameters.All)
            if (this.Get(parameter) is { } value && !parameter.Contains(value))
                throw new ArgumentOutOfRangeException(parameter.Name, value, parameter.OutOfRangeMessage(parameter.Name, value));
        return this;
    }
}
