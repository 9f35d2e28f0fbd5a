using System.Text.Json;
using OnnxDecoder.Runtime.Sampling.Constraints;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Tools;

/// <summary>
/// The raw text of a string parameter in Qwen3-Coder's XML calls (written unescaped before "\n&lt;/parameter&gt;"), with the
/// keywords of its schema as <see cref="JsonSchemaCompiler"/> enforces them on a JSON string: a string const or enum (its
/// members), minLength / maxLength (code points), pattern (the <see cref="RegexGrammar"/> subset, a match somewhere in the
/// text, ^ / $ anchoring), format (<see cref="StringFormatGrammar"/>'s formats), anyOf / oneOf (the union of the branches
/// that accept a string), a type list (only its "string" counts), a local $ref. The parser keeps such a value as text, so
/// it is always a JSON string: a branch, const or enum member that is no string can never match and drops out, and a schema
/// left with no string is refused. Every constrained value is also kept free of "&lt;/parameter&gt;"
/// (<see cref="TextExcluding"/>), since the parser ends the value at its first one. Keywords the JSON form does not know
/// (allOf, not, if, nullable, ...) are refused, and so are combinations it refuses, and a oneOf two of whose branches accept
/// a string (the union could write a text both match). Keywords of other types (minimum, items, ...) do not apply to a
/// string, as in JSON Schema.
/// </summary>
internal sealed class QwenXmlTextValue
{
    private const string ParameterClose = "</parameter>";
    private const int MaxRefDepth = 32;
    private static readonly string[] StringKeywords = ["minLength", "maxLength", "pattern", "format"];
    private static readonly GrammarNode Character = Alt(Bytes(ByteSet.Range(0x00, 0x7F)), JsonGrammar.Utf8NonAscii());

    private readonly JsonElement _parameters;
    private readonly GrammarNode _unconstrained;
    private readonly string _at, _function, _key;

    private QwenXmlTextValue(JsonElement parameters, GrammarNode unconstrained, string at, string function, string key)
    {
        _parameters = parameters;
        _unconstrained = unconstrained;
        _at = at;
        _function = function;
        _key = key;
    }

    /// <param name="parameters">The function's parameters schema, where a $ref resolves.</param>
    /// <param name="unconstrained">Any text without the marker, for a schema without string keywords.</param>
    /// <param name="at">Where the parameters schema is (tools[i].function), for errors; <paramref name="pointer"/> is the
    /// parameter's inside it.</param>
    public static GrammarNode For(JsonElement parameters, JsonElement schema, GrammarNode unconstrained, string at, string function, string key,
        string pointer)
    {
        var value = new QwenXmlTextValue(parameters, unconstrained, at, function, key);
        return value.Text(schema, pointer, 0)
            ?? throw value.Error(pointer, "no string satisfies the schema, and this parameter's value is text (its type is \"string\" or missing, " +
                "as Qwen3-Coder's parser reads it): give the parameter the type of its values");
    }

    private GrammarException Error(string pointer, string message) =>
        new($"{_at}.parameters#{pointer} (function '{_function}', parameter '{_key}'): {message}");

    // Null: no string matches the schema.
    private GrammarNode? Text(JsonElement schema, string pointer, int depth)
    {
        if (schema.ValueKind == JsonValueKind.True) return _unconstrained;
        if (schema.ValueKind == JsonValueKind.False) return null;
        if (schema.ValueKind != JsonValueKind.Object) throw Error(pointer, $"a schema must be an object or a boolean, not {schema.ValueKind}");
        GrammarException KeywordError(string keyword, string message) => Error($"{pointer}/{JsonSchemaCompiler.Escape(keyword)}", message);

        var keywords = new List<string>();
        foreach (var property in schema.EnumerateObject())
        {
            string name = property.Name;
            if (JsonSchemaCompiler.Annotations.Contains(name) || name is "$defs" or "definitions") continue;
            if (name == "nullable")
                throw KeywordError(name, "'nullable' is OpenAPI's, not JSON Schema's: write \"type\": [\"string\", \"null\"] (the value is then JSON: " +
                    "null, or a quoted string)");
            if (!JsonSchemaCompiler.Supported.Contains(name))
                throw KeywordError(name, $"keyword '{name}' is not supported by the constraint (a text value honours type, const, enum, anyOf, oneOf, " +
                    "$ref, minLength, maxLength, pattern, format): remove it");
            keywords.Add(name);
        }

        if (schema.TryGetProperty("type", out var type) && !Types(type, () => KeywordError("type", "type must be a type name or a non-empty array " +
            "of them (null, boolean, integer, number, string, object, array)")).Contains("string")) return null;

        foreach (var combinator in new[] { "$ref", "anyOf", "oneOf" })
        {
            if (!schema.TryGetProperty(combinator, out var inner)) continue;
            foreach (var other in keywords)
                if (other is not ("type" or "uniqueItems") && other != combinator)
                    throw KeywordError(other, $"'{other}' beside '{combinator}' is not supported: move it into the referenced or branch schemas");
            if (combinator == "$ref") return Text(Resolve(inner, $"{pointer}/$ref", depth, out string target), target, depth + 1);
            if (inner.ValueKind != JsonValueKind.Array || inner.GetArrayLength() == 0)
                throw KeywordError(combinator, $"{combinator} must be a non-empty array of schemas");
            var branches = inner.EnumerateArray().Select((branch, i) => Text(branch, $"{pointer}/{combinator}/{i}", depth)).Where(b => b is not null).ToList();
            if (branches.Count == 0) return null;
            if (combinator == "oneOf" && branches.Count > 1)
                throw KeywordError(combinator, $"oneOf with {branches.Count} branches that accept a string is not supported (the constraint cannot " +
                    "keep a text from matching two): use anyOf if they cannot overlap, or one branch");
            return branches.Count == 1 ? branches[0] : Alt([.. branches!]);
        }
        return Strings(schema, KeywordError);
    }

    private static HashSet<string> Types(JsonElement type, Func<GrammarException> error)
    {
        var names = type.ValueKind switch
        {
            JsonValueKind.String => [type.GetString()!],
            JsonValueKind.Array when type.GetArrayLength() > 0 && type.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String) =>
                type.EnumerateArray().Select(t => t.GetString()!).ToHashSet(),
            _ => throw error(),
        };
        if (names.Any(n => n is not ("null" or "boolean" or "integer" or "number" or "string" or "object" or "array"))) throw error();
        return names;
    }

    private JsonElement Resolve(JsonElement reference, string pointer, int depth, out string target)
    {
        if (reference.ValueKind != JsonValueKind.String) throw Error(pointer, "$ref must be a string");
        string text = reference.GetString()!;
        if (!text.StartsWith('#')) throw Error(pointer, $"$ref '{text}' is not local: only references inside the parameters schema (#/...) are supported");
        if (depth >= MaxRefDepth) throw Error(pointer, $"$ref '{text}' is more than {MaxRefDepth} references deep (a cycle?): a text value cannot recurse");
        target = Uri.UnescapeDataString(text[1..]);
        var at = _parameters;
        if (target.Length == 0) return at;
        if (!target.StartsWith('/')) throw Error(pointer, $"$ref '{text}' is not a JSON pointer (#/$defs/name)");
        foreach (var raw in target[1..].Split('/'))
        {
            string part = raw.Replace("~1", "/").Replace("~0", "~");
            if (at.ValueKind == JsonValueKind.Object && at.TryGetProperty(part, out var child)) at = child;
            else if (at.ValueKind == JsonValueKind.Array && int.TryParse(part, out int index) && index >= 0 && index < at.GetArrayLength()) at = at[index];
            else throw Error(pointer, $"$ref '{text}' points at nothing in the parameters schema");
        }
        return at;
    }

    // The string keywords, as the JSON form's string schema reads them.
    private GrammarNode? Strings(JsonElement schema, Func<string, string, GrammarException> error)
    {
        var present = StringKeywords.Where(k => schema.TryGetProperty(k, out _)).ToList();
        bool hasLength = present.Contains("minLength") || present.Contains("maxLength");
        List<string>? allowed = null;
        if (schema.TryGetProperty("enum", out var values))
        {
            if (values.ValueKind != JsonValueKind.Array || values.GetArrayLength() == 0) throw error("enum", "enum must be a non-empty array");
            allowed = [.. values.EnumerateArray().Where(v => v.ValueKind == JsonValueKind.String).Select(v => v.GetString()!)];
        }
        if (schema.TryGetProperty("const", out var constant))
        {
            if (constant.ValueKind != JsonValueKind.String) return null;
            if (allowed is not null && !allowed.Contains(constant.GetString()!))
                throw error("const", "no value of enum / const matches: make const one of enum's members");
            allowed = [constant.GetString()!];
        }
        if (allowed is not null)
        {
            string keyword = schema.TryGetProperty("const", out _) ? "const" : "enum";
            if (present.Count > 0) throw error(present[0], $"'{present[0]}' beside '{keyword}' is not supported: keep one of them");
            if (allowed.Count == 0) return null;
            var writable = allowed.Where(v => !v.Contains(ParameterClose, StringComparison.Ordinal)).ToList();
            if (writable.Count == 0)
                throw error(keyword, $"every allowed value holds {ParameterClose}, which ends a value in the XML markup: change them");
            return Alt([.. writable.Select(v => Literal(v))]);
        }
        if (schema.TryGetProperty("format", out var format))
        {
            if (format.ValueKind != JsonValueKind.String) throw error("format", "format must be a string");
            if (present.Contains("pattern") || hasLength)
                throw error("format", "format beside pattern, minLength or maxLength is not supported: keep one of them");
            var contents = StringFormatGrammar.For(format.GetString()!)
                ?? throw error("format", $"format '{format.GetString()}' is not written by the constraint " +
                    $"(supported: {string.Join(", ", StringFormatGrammar.Supported)}); remove it, or use a pattern");
            return WithoutMarker(contents, "format", error);
        }
        if (schema.TryGetProperty("pattern", out var pattern))
        {
            if (pattern.ValueKind != JsonValueKind.String) throw error("pattern", "pattern must be a string");
            if (hasLength)
                throw error("pattern", "pattern beside minLength or maxLength is not supported: state the length in the pattern, e.g. ^.{2,8}$");
            GrammarNode text;
            try
            {
                text = RegexGrammar.TextPattern(pattern.GetString()!);
            }
            catch (GrammarException e)
            {
                throw error("pattern", e.Message);
            }
            return WithoutMarker(text, "pattern", error);
        }
        if (!hasLength) return _unconstrained;
        int min = Count(schema, "minLength", error) ?? 0, max = Count(schema, "maxLength", error) ?? -1;
        if (max >= 0 && min > max) throw error("maxLength", $"minLength {min} is above maxLength {max}: no string satisfies it");
        return WithoutMarker(Repeat(Character, min, max), max >= 0 ? "maxLength" : "minLength", error);
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
