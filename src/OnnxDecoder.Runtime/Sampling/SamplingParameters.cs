using System.Globalization;

namespace OnnxDecoder.Runtime.Sampling;

/// <summary>
/// One sampling parameter as every front door spells it: <see cref="Name"/> in OpenAI request JSON
/// and in genai_config.json's <c>search</c>, <see cref="Flag"/> on the CLI. Values outside
/// [<see cref="Min"/>, <see cref="Max"/>] are refused with the parameter's name.
/// </summary>
public sealed record SamplingParameter(string Name, string Flag, double Min, double Max, double? Default, bool IsInteger, string Description)
{
    public bool Contains(double value) => !double.IsNaN(value) && value >= Min && value <= Max && (!IsInteger || Math.Floor(value) == value);

    /// <summary>"between 0 and 2", for error messages.</summary>
    public string RangeText => $"between {Format(Min)} and {Format(Max)}";

    /// <summary>The one-line refusal of <paramref name="value"/>, naming <paramref name="where"/> (a field or flag).</summary>
    public string OutOfRangeMessage(string where, double value) =>
        $"'{where}' is {Format(value)}; it must be {(IsInteger ? "a whole number " : "")}{RangeText}";

    public static string Format(double value) => value switch
    {
        >= int.MaxValue => "2^31-1",
        <= int.MinValue => "-2^31",
        _ => value.ToString(CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// The table of sampling parameters: the CLI's flags, the server's request validation and the
/// IChatClient's ChatOptions mapping all read it, so a range or default changes in one place.
/// </summary>
public static class SamplingParameters
{
    public static readonly SamplingParameter Temperature = new("temperature", "--temperature", 0, 2, 0, false,
        "softmax temperature; 0 is greedy");
    public static readonly SamplingParameter TopK = new("top_k", "--top-k", 0, int.MaxValue, 0, true,
        "keep the k most likely tokens (0: off; 1: greedy)");
    public static readonly SamplingParameter TopP = new("top_p", "--top-p", 0, 1, 1, false,
        "keep the smallest set of likely tokens whose probability reaches p (1: off; 0: the most likely token)");
    public static readonly SamplingParameter MinP = new("min_p", "--min-p", 0, 1, 0, false,
        "drop tokens less likely than min_p x the most likely one (0: off)");
    public static readonly SamplingParameter RepetitionPenalty = new("repetition_penalty", "--repetition-penalty", 0.01, 100, 1, false,
        "CTRL penalty on tokens already in the sequence: positive logits divided by it, negative multiplied (1: off)");
    public static readonly SamplingParameter Seed = new("seed", "--seed", int.MinValue, int.MaxValue, null, true,
        "seed of the draw: same seed, same tokens (none: a random seed)");

    /// <summary>Every parameter, in the order the processors apply them (seed last: it feeds the draw).</summary>
    public static IReadOnlyList<SamplingParameter> All { get; } = [RepetitionPenalty, Temperature, TopK, MinP, TopP, Seed];

    public static SamplingParameter? Find(string name) => All.FirstOrDefault(p => p.Name == name);

    /// <summary><paramref name="options"/> with <paramref name="parameter"/> set to <paramref name="value"/>,
    /// which the caller has checked with <see cref="SamplingParameter.Contains"/>.</summary>
    public static SamplingOptions Set(this SamplingOptions options, SamplingParameter parameter, double value) => parameter.Name switch
    {
        "temperature" => options with { Temperature = (float)value },
        "top_k" => options with { TopK = (int)value },
        "top_p" => options with { TopP = (float)value },
        "min_p" => options with { MinP = (float)value },
        "repetition_penalty" => options with { RepetitionPenalty = (float)value },
        "seed" => options with { Seed = (int)value },
        _ => throw new ArgumentException($"'{parameter.Name}' is not a sampling parameter", nameof(parameter)),
    };

    public static double? Get(this SamplingOptions options, SamplingParameter parameter) => parameter.Name switch
    {
        "temperature" => options.Temperature,
        "top_k" => options.TopK,
        "top_p" => options.TopP,
        "min_p" => options.MinP,
        "repetition_penalty" => options.RepetitionPenalty,
        "seed" => options.Seed,
        _ => throw new ArgumentException($"'{parameter.Name}' is not a sampling parameter", nameof(parameter)),
    };
}
