namespace OnnxDecoder.Bench;

/// <summary>--name value pairs after the verb; an unknown or valueless flag is an error naming it.</summary>
public sealed class Arguments
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _read = new(StringComparer.Ordinal);

    public Arguments(IEnumerable<string> args)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            if (!list[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"unexpected argument '{list[i]}': flags are --name value");
            if (i + 1 >= list.Count) throw new ArgumentException($"{list[i]} needs a value");
            _values[list[i]] = list[++i];
        }
    }

    public string? Optional(string name)
    {
        _read.Add(name);
        return _values.GetValueOrDefault(name);
    }

    public string String(string name, string fallback) => Optional(name) ?? fallback;
    public string Required(string name) => Optional(name) ?? throw new ArgumentException($"{name} is required");

    public int Int(string name, int fallback) => Optional(name) is { } text
        ? int.TryParse(text, out int value) && value > 0 ? value : throw new ArgumentException($"{name} '{text}' must be a positive whole number")
        : fallback;

    /// <summary>Call after reading every flag: a misspelt flag is refused rather than ignored.</summary>
    public void ThrowIfUnread()
    {
        var unknown = _values.Keys.FirstOrDefault(k => !_read.Contains(k));
        if (unknown is not null) throw new ArgumentException($"unknown flag {unknown}");
    }
}
