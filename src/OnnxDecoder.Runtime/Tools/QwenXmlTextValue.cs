using System.Text.Json;
using OnnxDecoder.Runtime.Sampling.Constraints;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Tools;

/// <summary>
/// The raw text of a string parameter in Qwen3-Coder's XML calls (written unescaped before "\n&lt;/parameter&gt;"), with the
/// string keywords of its schema as <see cref="JsonSchemaCompiler"/> enforces them on a JSON string: a string const or
/// enum (its members), minLength / maxLength (code points), pattern (the <see cref="RegexGrammar"/> subset, a match somewhere in the
/// text, ^ / $ anchoring), format (<see cref="StringFormatGrammar"/>'s formats). Every constrained value is also kept free
/// of "&lt;/parameter&gt;" (<see cref="TextExcluding"/>), since the parser ends the value at its first one. Combinations
/// the JSON form refuses are refused here too.
/// </summary>
internal static class QwenXmlTextValue
{
    private const string ParameterClose = "</parameter>";
    private static readonly string[] StringKeywords = ["minLength", "maxLength", "pattern", "format"];
    private static readonly GrammarNode Character = Alt(Bytes(ByteSet.Range(0x00, 0x7F)), JsonGrammar.Utf8NonAscii());

    /// <param name="unconstrained">Any text without the marker, for a schema without string keywords.</param>
    /// <param name="at">Where the parameters schema is (tools[i].function), for errors; <paramref name="pointer"/> is the
    /// parameter's inside it.</param>
    public static GrammarNode For(JsonElement schema, GrammarNode unconstrained, string at, string function, string key, string pointer)
    {
        if (schema.ValueKind != JsonValueKind.Object) return unconstrained;
        GrammarException Error(string keyword, string message) =>
            new($"{at}.parameters#{pointer}/{keyword} (function '{function}', parameter '{key}'): {message}");
        var present = StringKeywords.Where(k => schema.TryGetProperty(k, out _)).ToList();
        bool hasLength = present.Contains("minLength") || present.Contains("maxLength");

        if (schema.TryGetProperty("const", out var constant) && constant.ValueKind == JsonValueKind.String)
        {
            if (present.Count > 0) throw Error(present[0], $"'{present[0]}' beside 'const' is not supported: keep one of them");
            string text = constant.GetString()!;
            if (text.Contains(ParameterClose))
                throw Error("const", $"the value holds {ParameterClose}, which ends a value in the XML markup: change it");
            if (schema.TryGetProperty("enum", out var members) && members.ValueKind == JsonValueKind.Array
                && !members.EnumerateArray().Any(m => m.ValueKind == JsonValueKind.String && m.GetString() == text))
                throw Error("const", "no value of enum / const matches: make const one of enum's members");
            return Literal(text);
        }
        if (schema.TryGetProperty("enum", out var values))
        {
            if (present.Count > 0) throw Error(present[0], $"'{present[0]}' beside 'enum' is not supported: keep one of them");
            if (values.ValueKind == JsonValueKind.Array && values.GetArrayLength() > 0
                && values.EnumerateArray().All(v => v.ValueKind == JsonValueKind.String && !v.GetString()!.Contains(ParameterClose)))
                return Alt([.. values.EnumerateArray().Select(v => Literal(v.GetString()!))]);
            return unconstrained;
        }
        if (schema.TryGetProperty("format", out var format))
        {
            if (format.ValueKind != JsonValueKind.String) throw Error("format", "format must be a string");
            if (present.Contains("pattern") || hasLength)
                throw Error("format", "format beside pattern, minLength or maxLength is not supported: keep one of them");
            var contents = StringFormatGrammar.For(format.GetString()!)
                ?? throw Error("format", $"format '{format.GetString()}' is not written by the constraint " +
                    $"(supported: {string.Join(", ", StringFormatGrammar.Supported)}); remove it, or use a pattern");
            return WithoutMarker(contents, "format", Error);
        }
        if (schema.TryGetProperty("pattern", out var pattern))
        {
            if (pattern.ValueKind != JsonValueKind.String) throw Error("pattern", "pattern must be a string");
            if (hasLength)
                throw Error("pattern", "pattern beside minLength or maxLength is not supported: state the length in the pattern, e.g. ^.{2,8}$");
            GrammarNode text;
            try
            {
                text = RegexGrammar.TextPattern(pattern.GetString()!);
            }
            catch (GrammarException e)
            {
                throw Error("pattern", e.Message);
            }
            return WithoutMarker(text, "pattern", Error);
        }
        if (!hasLength) return unconstrained;
        int min = Count(schema, "minLength", Error) ?? 0, max = Count(schema, "maxLength", Error) ?? -1;
        if (max >= 0 && min > max) throw Error("maxLength", $"minLength {min} is above maxLength {max}: no string satisfies it");
        return WithoutMarker(Repeat(Character, min, max), max >= 0 ? "maxLength" : "minLength", Error);
    }

    private static GrammarNode WithoutMarker(GrammarNode text, string keyword, Func<string, string, GrammarException> error)
    {
        try
        {
            return TextExcluding.Intersect(text, ParameterClose);
        }
        catch (GrammarException e)
        {
            throw error(keyword, $"{e.Message} (the value is raw text that the first {ParameterClose} ends): loosen the {keyword}");
        }
    }

    private static int? Count(JsonElement schema, string keyword, Func<string, string, GrammarException> error)
    {
        if (!schema.TryGetProperty(keyword, out var value)) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int count) || count < 0)
            throw error(keyword, $"{keyword} must be a non-negative integer (at most {int.MaxValue})");
        return count;
    }
}
