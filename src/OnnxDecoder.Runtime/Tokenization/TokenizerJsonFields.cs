using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// The field readers the tokenizer.json component readers share: typed, range-checked values whose errors name
/// the file and the field, regex patterns, split behaviours and the cap on nested Sequence components.
/// </summary>
internal abstract class TokenizerJsonFields(string path)
{
    protected const int MaxId = 1 << 24;
    protected const int MaxNesting = 8;

    /// <summary>The tokenizer.json being read.</summary>
    protected string Path { get; } = path;

    protected ModelFormatException Bad(string problem) => new(Path, problem);

    protected ModelFormatException Unsupported(string field, string type, string supported) =>
        Bad($"{field}.type '{type}' is not supported (supported: {supported}); this tokenizer cannot be run here");

    protected string TypeOf(JsonElement element, string field) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String
            ? t.GetString()! : throw Bad($"{field} must be an object with a string \"type\"");

    protected string? String(JsonElement element, string name, string field)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind == JsonValueKind.String ? value.GetString()! : throw Bad($"{field}.{name} must be a string");
    }

    protected bool Bool(JsonElement element, string name, string field, bool fallback)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return fallback;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad($"{field}.{name} must be true or false"),
        };
    }

    protected int Int(JsonElement element, string name, string field, int fallback, int max)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return fallback;
        return value.TryGetInt32(out int n) && n >= 0 && n <= max ? n : throw Bad($"{field}.{name} must be an integer 0..{max}");
    }

    protected int Id(JsonElement value, string field) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int id) && id is >= 0 and < MaxId ? id : throw Bad($"{field} is not a valid id");

    protected char OneChar(string? text, string field) =>
        text is { Length: 1 } ? text[0] : throw Bad($"{field} must be a single character (BMP), not '{text}'");

    protected OnigPattern Pattern(JsonElement element, string field)
    {
        if (!element.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
            throw Bad($"{field}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}");
        if (pattern.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String) return OnigPattern.Literal(s.GetString()!);
        if (pattern.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
        {
            try
            {
                return OnigPattern.Create(r.GetString()!);
            }
            catch (ArgumentException e)
            {
                throw Bad($"{field}.pattern.Regex cannot be run: {e.Message}");
            }
        }
        throw Bad($"{field}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}");
    }

    protected void CheckDepth(int depth, string field)
    {
        if (depth > MaxNesting) throw Bad($"{field} nests Sequence components deeper than {MaxNesting}");
    }

    protected List<JsonElement> Array(JsonElement element, string name, string field)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.Array) throw Bad($"{field}.{name} must be an array");
        return [.. value.EnumerateArray()];
    }

    protected SplitBehavior Behavior(JsonElement e, string field, SplitBehavior fallback)
    {
        string? behavior = String(e, "behavior", field);
        return behavior switch
        {
            null => fallback,
            "Removed" => SplitBehavior.Removed,
            "Isolated" => SplitBehavior.Isolated,
            "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
            "MergedWithNext" => SplitBehavior.MergedWithNext,
            "Contiguous" => SplitBehavior.Contiguous,
            _ => throw Bad($"{field}.behavior '{behavior}' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous"),
        };
    }
}
