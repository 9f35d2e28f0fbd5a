using System.Text.Encodings.Web;
using System.Text.Json;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// Compiles a JSON Schema (the subset below) into a grammar whose sentences are exactly JSON texts
/// the schema accepts, or a subset of them where the schema allows more than we generate (objects
/// get only their declared properties, in declared order). Supported: type (one or a list, so
/// nullable types), enum, const, properties, required, additionalProperties (false or absent),
/// minProperties, maxProperties, items, prefixItems, minItems, maxItems, uniqueItems false, anyOf,
/// oneOf (as anyOf: exact when the branches are disjoint), minLength, maxLength, pattern (the
/// <see cref="RegexGrammar"/> subset, unanchored), format (those of <see cref="StringFormatGrammar"/>),
/// integer and number with minimum, maximum, exclusiveMinimum, exclusiveMaximum (exact digit
/// ranges, see <see cref="DecimalRangeGrammar"/>), local $ref with $defs / definitions.
/// Annotations are ignored. Any other keyword, and a format we do not write, is refused, naming it
/// and its JSON pointer: a format is an annotation to a plain JSON Schema 2020-12 validator, but
/// one that asserts formats would refuse output we could not vouch for.
/// </summary>
public sealed class JsonSchemaCompiler
{
    internal static readonly HashSet<string> Supported =
    [
        "type", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "anyOf", "oneOf", "minLength", "maxLength", "$ref", "$defs", "definitions",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "format", "minProperties", "maxProperties", "uniqueItems",
    ];
    private static readonly string[] NumberBounds = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];
    /// <summary>Integer digits of a bounded number (as <see cref="JsonGrammar.Integer"/> writes at most) and its fraction digits.</summary>
    private const int MaxIntegerDigits = 18, MaxFractionDigits = 15;
    internal static readonly HashSet<string> Annotations =
        ["title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly", "strict"];

    private readonly JsonGrammar _json;
    private readonly Dictionary<(int Document, string Pointer), int> _refRules = new();
    private int _document = -1;
    private JsonElement _root;
    private string _source = "";

    private readonly JsonSchemaContainers _containers;

    public JsonSchemaCompiler(JsonGrammar json)
    {
        _json = json;
        _containers = new JsonSchemaContainers(this, json);
    }

    /// <summary>Parses and compiles a schema file's text into a whole-document grammar.</summary>
    public static Grammar Compile(string schemaJson, string source = "schema", int maxWhitespace = JsonGrammar.DefaultMaxWhitespace)
    {
        using var document = Parse(schemaJson, source);
        var grammar = new Grammar { Description = $"json-schema {source}" };
        var json = new JsonGrammar(grammar, maxWhitespace);
        return grammar.WithRoot(json.Document(new JsonSchemaCompiler(json).CompileDocument(document.RootElement, source)));
    }

    internal static JsonDocument Parse(string text, string source)
    {
        try
        {
            return JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new GrammarException($"{source}: not valid JSON ({e.Message})");
        }
    }

    /// <summary>Compiles one schema document (its $refs resolve inside it); <paramref name="source"/> prefixes error pointers.</summary>
    public GrammarNode CompileDocument(JsonElement root, string source)
    {
        _document++;
        _root = root;
        _source = source;
        return Compile(root, "");
    }

    /// <summary>Compiles the subschema <paramref name="schema"/> found at <paramref name="pointer"/> inside <paramref name="root"/>
    /// (whose $refs it may use): a syntax that writes an object's members itself needs each member's value alone.</summary>
    public GrammarNode CompileMember(JsonElement root, JsonElement schema, string pointer, string source)
    {
        _document++;
        _root = root;
        _source = source;
        return Compile(schema, pointer);
    }

    internal GrammarException Error(string pointer, string message) => new($"{_source}#{pointer}: {message}");

    internal GrammarNode Compile(JsonElement schema, string pointer)
    {
        if (schema.ValueKind == JsonValueKind.True) return _json.Value();
        if (schema.ValueKind == JsonValueKind.False) throw Error(pointer, "the schema false accepts no value");
        if (schema.ValueKind != JsonValueKind.Object) throw Error(pointer, $"a schema must be an object or a boolean, not {schema.ValueKind}");

        var keywords = new List<string>();
        foreach (var property in schema.EnumerateObject())
        {
            if (Annotations.Contains(property.Name)) continue;
            if (!Supported.Contains(property.Name))
                throw Error($"{pointer}/{Escape(property.Name)}", $"keyword '{property.Name}' is not supported by the constraint (supported: {string.Join(", ", Supported)})");
            if (property.Name is not ("$defs" or "definitions")) keywords.Add(property.Name);
        }

        if (schema.TryGetProperty("uniqueItems", out var unique))
        {
            if (unique.ValueKind == JsonValueKind.True)
                throw Error($"{pointer}/uniqueItems", "keyword 'uniqueItems' true is not supported by the constraint (it cannot keep items distinct): remove it, or use prefixItems or enum");
            if (unique.ValueKind != JsonValueKind.False) throw Error($"{pointer}/uniqueItems", "uniqueItems must be a boolean");
            keywords.Remove("uniqueItems");
        }
        if (schema.TryGetProperty("$ref", out var reference))
        {
            RefuseSiblings(pointer, "$ref", keywords, []);
            return Reference(reference, $"{pointer}/$ref");
        }
        foreach (var combinator in new[] { "anyOf", "oneOf" })
            if (schema.TryGetProperty(combinator, out var branches))
            {
                RefuseSiblings(pointer, combinator, keywords, []);
                if (branches.ValueKind != JsonValueKind.Array || branches.GetArrayLength() == 0)
                    throw Error($"{pointer}/{combinator}", $"{combinator} must be a non-empty array of schemas");
                return Alt([.. branches.EnumerateArray().Select((branch, i) => Compile(branch, $"{pointer}/{combinator}/{i}"))]);
            }

        var types = Types(schema, pointer);
        if (schema.TryGetProperty("const", out var constant) || schema.TryGetProperty("enum", out _))
        {
            RefuseSiblings(pointer, schema.TryGetProperty("const", out _) ? "const" : "enum", keywords, ["type", "enum", "const"]);
            var values = schema.TryGetProperty("const", out constant) ? [constant] : EnumValues(schema, pointer);
            if (schema.TryGetProperty("const", out _) && schema.TryGetProperty("enum", out _))
                values = values.Where(v => EnumValues(schema, pointer).Any(e => JsonElement.DeepEquals(e, v))).ToList();
            if (types is not null) values = values.Where(v => types.Any(t => IsOfType(v, t))).ToList();
            if (values.Count == 0) throw Error(pointer, "no value of enum / const matches the schema's type");
            return Alt([.. values.Select(v => Literal(Compact(v)))]);
        }

        types ??= InferTypes(schema);
        return Alt([.. types.Select(type => CompileType(schema, pointer, type))]);
    }

    private GrammarNode CompileType(JsonElement schema, string pointer, string type) => type switch
    {
        "null" => JsonGrammar.Null,
        "boolean" => JsonGrammar.Boolean,
        "integer" => CompileNumber(schema, pointer, fractionDigits: 0),
        "number" => CompileNumber(schema, pointer, MaxFractionDigits),
        "string" => CompileString(schema, pointer),
        "object" => _containers.CompileObject(schema, pointer),
        "array" => _containers.CompileArray(schema, pointer),
        _ => throw Error($"{pointer}/type", $"type '{type}' is not a JSON Schema type (null, boolean, integer, number, string, object, array)"),
    };

    // Unbounded: JSON's own number forms. Bounded: the digits in range, without an exponent (see DecimalRangeGrammar).
    private GrammarNode CompileNumber(JsonElement schema, string pointer, int fractionDigits)
    {
        DecimalBound? lower = null, upper = null;
        foreach (var keyword in NumberBounds)
        {
            if (!schema.TryGetProperty(keyword, out var value)) continue;
            if (value.ValueKind != JsonValueKind.Number || DecimalDigits.Parse(value.GetRawText()) is not { } digits)
                throw Error($"{pointer}/{keyword}", $"{keyword} must be a number (draft 2020-12: exclusiveMinimum/Maximum are numbers, not booleans), exponent within ±400");
            var bound = new DecimalBound(digits, Exclusive: keyword.StartsWith("exclusive", StringComparison.Ordinal));
            // Of two bounds on one side the tighter counts (at a tie, the exclusive one).
            if (keyword is "minimum" or "exclusiveMinimum")
            {
                int order = lower is { } l ? DecimalDigits.Compare(digits, l.Value) : 1;
                if (order > 0 || (order == 0 && bound.Exclusive)) lower = bound;
            }
            else
            {
                int order = upper is { } u ? DecimalDigits.Compare(digits, u.Value) : -1;
                if (order < 0 || (order == 0 && bound.Exclusive)) upper = bound;
            }
        }
        if (lower is null && upper is null) return fractionDigits == 0 ? JsonGrammar.Integer : JsonGrammar.Number;
        return DecimalRangeGrammar.Between(lower, upper, MaxIntegerDigits, fractionDigits)
            ?? throw Error(pointer, $"no {(fractionDigits == 0 ? "integer" : "number")} in {DecimalRangeGrammar.Describe(lower, upper)} " +
                $"has at most {MaxIntegerDigits} integer digits{(fractionDigits > 0 ? $" and {fractionDigits} fraction digits" : "")}: widen the range");
    }

    private GrammarNode CompileString(JsonElement schema, string pointer)
    {
        bool hasLength = schema.TryGetProperty("minLength", out _) || schema.TryGetProperty("maxLength", out _);
        if (schema.TryGetProperty("format", out var format))
        {
            if (format.ValueKind != JsonValueKind.String) throw Error($"{pointer}/format", "format must be a string");
            if (schema.TryGetProperty("pattern", out _) || hasLength)
                throw Error($"{pointer}/format", "format beside pattern, minLength or maxLength is not supported: keep one of them");
            var contents = StringFormatGrammar.For(format.GetString()!)
                ?? throw Error($"{pointer}/format", $"format '{format.GetString()}' is not written by the constraint (supported: {string.Join(", ", StringFormatGrammar.Supported)}); " +
                    "remove it, or use a pattern");
            return Seq(Literal("\""), contents, Literal("\""));
        }
        if (schema.TryGetProperty("pattern", out var pattern))
        {
            if (pattern.ValueKind != JsonValueKind.String) throw Error($"{pointer}/pattern", "pattern must be a string");
            if (hasLength) throw Error($"{pointer}/pattern", "pattern beside minLength or maxLength is not supported: state the length in the pattern, e.g. ^.{2,8}$");
            try
            {
                return Seq(Literal("\""), RegexGrammar.JsonStringPattern(pattern.GetString()!), Literal("\""));
            }
            catch (GrammarException e)
            {
                throw Error($"{pointer}/pattern", e.Message);
            }
        }
        int min = Count(schema, "minLength", pointer) ?? 0, max = Count(schema, "maxLength", pointer) ?? -1;
        if (max >= 0 && min > max) throw Error(pointer, $"minLength {min} is above maxLength {max}: no string satisfies it");
        return JsonGrammar.String(min, max);
    }

    private GrammarNode Reference(JsonElement reference, string pointer)
    {
        if (reference.ValueKind != JsonValueKind.String) throw Error(pointer, "$ref must be a string");
        string target = reference.GetString()!;
        if (!target.StartsWith('#')) throw Error(pointer, $"$ref '{target}' is not local: only references inside the schema (#/...) are supported");
        string targetPointer = Uri.UnescapeDataString(target[1..]);
        if (_refRules.TryGetValue((_document, targetPointer), out int existing)) return new RuleNode(existing);
        var resolved = Resolve(targetPointer, pointer);
        int rule = _json.Grammar.NewRule();
        _refRules[(_document, targetPointer)] = rule;
        _json.Grammar.Define(rule, Compile(resolved, targetPointer));
        return new RuleNode(rule);
    }

    private JsonElement Resolve(string targetPointer, string pointer)
    {
        var at = _root;
        if (targetPointer.Length == 0) return at;
        if (!targetPointer.StartsWith('/')) throw Error(pointer, $"$ref '#{targetPointer}' is not a JSON pointer (#/$defs/name)");
        foreach (var raw in targetPointer[1..].Split('/'))
        {
            string part = raw.Replace("~1", "/").Replace("~0", "~");
            if (at.ValueKind == JsonValueKind.Object && at.TryGetProperty(part, out var child)) at = child;
            else if (at.ValueKind == JsonValueKind.Array && int.TryParse(part, out int index) && index >= 0 && index < at.GetArrayLength()) at = at[index];
            else throw Error(pointer, $"$ref '#{targetPointer}' points at nothing in the schema");
        }
        return at;
    }

    private void RefuseSiblings(string pointer, string keyword, List<string> keywords, string[] allowed)
    {
        foreach (var other in keywords)
            if (other != keyword && !allowed.Contains(other))
                throw Error($"{pointer}/{Escape(other)}", $"'{other}' beside '{keyword}' is not supported: move it into the referenced or branch schemas");
    }

    private List<string>? Types(JsonElement schema, string pointer)
    {
        if (!schema.TryGetProperty("type", out var type)) return null;
        var list = type.ValueKind switch
        {
            JsonValueKind.String => [type.GetString()!],
            JsonValueKind.Array when type.GetArrayLength() > 0 && type.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String) =>
                type.EnumerateArray().Select(t => t.GetString()!).Distinct().ToList(),
            _ => throw Error($"{pointer}/type", "type must be a type name or a non-empty array of them"),
        };
        foreach (var name in list)
            if (name is not ("null" or "boolean" or "integer" or "number" or "string" or "object" or "array"))
                throw Error($"{pointer}/type", $"type '{name}' is not a JSON Schema type (null, boolean, integer, number, string, object, array)");
        if (list.Contains("number")) list.Remove("integer"); // every integer is a number; one branch keeps choices disjoint
        return list;
    }

    // Keywords of one type imply it (a schema with only "properties" accepts other types too: we generate the subset).
    private static List<string> InferTypes(JsonElement schema)
    {
        bool Has(params string[] keywords) => keywords.Any(k => schema.TryGetProperty(k, out _));
        if (Has("properties", "required", "additionalProperties", "minProperties", "maxProperties")) return ["object"];
        if (Has("items", "prefixItems", "minItems", "maxItems")) return ["array"];
        if (Has("minLength", "maxLength", "pattern", "format")) return ["string"];
        if (Has(NumberBounds)) return ["number"];
        return ["null", "boolean", "number", "string", "object", "array"];
    }

    private List<JsonElement> EnumValues(JsonElement schema, string pointer)
    {
        var list = schema.GetProperty("enum");
        if (list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0) throw Error($"{pointer}/enum", "enum must be a non-empty array");
        return [.. list.EnumerateArray()];
    }

    private static bool IsOfType(JsonElement value, string type) => type switch
    {
        "null" => value.ValueKind == JsonValueKind.Null,
        "boolean" => value.ValueKind is JsonValueKind.True or JsonValueKind.False,
        "number" => value.ValueKind == JsonValueKind.Number,
        "integer" => value.ValueKind == JsonValueKind.Number && decimal.TryParse(value.GetRawText(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var d) && d == decimal.Truncate(d),
        "string" => value.ValueKind == JsonValueKind.String,
        "object" => value.ValueKind == JsonValueKind.Object,
        "array" => value.ValueKind == JsonValueKind.Array,
        _ => false,
    };

    internal int? Count(JsonElement schema, string keyword, string pointer)
    {
        if (!schema.TryGetProperty(keyword, out var value)) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int count) || count < 0)
            throw Error($"{pointer}/{keyword}", $"{keyword} must be a non-negative integer (at most {int.MaxValue})");
        return count;
    }

    private static string Compact(JsonElement value)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping })) value.WriteTo(writer);
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    internal static string Escape(string name) => name.Replace("~", "~0").Replace("/", "~1");
}
