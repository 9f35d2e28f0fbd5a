using System.Text.Encodings.Web;
using System.Text.Json;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// The object and array keywords of <see cref="JsonSchemaCompiler"/>: properties, required, additionalProperties,
/// min/maxProperties, prefixItems, items and min/maxItems. Sub-schemas go back to the compiler.
/// </summary>
internal sealed class JsonSchemaContainers(JsonSchemaCompiler compiler, JsonGrammar json)
{
    private static readonly JsonSerializerOptions KeyEncoding = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public GrammarNode CompileObject(JsonElement schema, string pointer)
    {
        var ws = json.Whitespace;
        bool closed = false;
        if (schema.TryGetProperty("additionalProperties", out var additional))
        {
            if (additional.ValueKind == JsonValueKind.False) closed = true;
            else if (additional.ValueKind != JsonValueKind.True)
                throw compiler.Error($"{pointer}/additionalProperties", "only additionalProperties false (or true) is supported, not a schema: list the properties instead");
        }
        var names = new List<string>();
        var schemas = new List<(JsonElement Schema, string Pointer)>();
        if (schema.TryGetProperty("properties", out var properties))
        {
            if (properties.ValueKind != JsonValueKind.Object) throw compiler.Error($"{pointer}/properties", "properties must be an object of schemas");
            foreach (var property in properties.EnumerateObject())
            {
                names.Add(property.Name);
                schemas.Add((property.Value, $"{pointer}/properties/{JsonSchemaCompiler.Escape(property.Name)}"));
            }
        }
        var required = new HashSet<string>(StringComparer.Ordinal);
        if (schema.TryGetProperty("required", out var requiredList))
        {
            if (requiredList.ValueKind != JsonValueKind.Array || requiredList.EnumerateArray().Any(r => r.ValueKind != JsonValueKind.String))
                throw compiler.Error($"{pointer}/required", "required must be an array of property names");
            foreach (var name in requiredList.EnumerateArray().Select(r => r.GetString()!))
            {
                if (!required.Add(name)) continue;
                if (names.Contains(name)) continue;
                if (closed) throw compiler.Error($"{pointer}/required", $"'{name}' is required but not among the properties, and additionalProperties is false: no object satisfies it");
                names.Add(name);
                schemas.Add((default, "")); // any value
            }
        }
        int minCount = compiler.Count(schema, "minProperties", pointer) ?? 0, maxCount = compiler.Count(schema, "maxProperties", pointer) ?? -1;
        if (maxCount >= 0 && minCount > maxCount) throw compiler.Error(pointer, $"minProperties {minCount} is above maxProperties {maxCount}: no object satisfies it");
        if (names.Count == 0 && !closed) return AnyObject(pointer, minCount, maxCount);
        if (minCount > names.Count)
            throw compiler.Error($"{pointer}/minProperties", closed
                ? $"minProperties {minCount} is above the {names.Count} properties allowed: no object satisfies it"
                : $"minProperties {minCount} is above the {names.Count} declared properties, and the constraint writes only declared ones: declare more properties");
        if (required.Count > maxCount && maxCount >= 0)
            throw compiler.Error($"{pointer}/maxProperties", $"maxProperties {maxCount} is below the {required.Count} required properties: no object satisfies it");
        var members = new GrammarNode[names.Count];
        for (int i = 0; i < names.Count; i++)
        {
            var value = schemas[i].Schema.ValueKind == JsonValueKind.Undefined ? json.Value() : compiler.Compile(schemas[i].Schema, schemas[i].Pointer);
            members[i] = Seq(Literal(JsonSerializer.Serialize(names[i], KeyEncoding)), ws, Literal(":"), ws, value, ws);
        }
        var flags = names.Select(required.Contains).ToArray();
        return Seq(Literal("{"), ws, new MembersNode(members, flags, Seq(Literal(","), ws), minCount, maxCount), Literal("}"));
    }

    // Any keys: repeated keys would count once, so only a maximum (or a minimum of one) is served.
    private GrammarNode AnyObject(string pointer, int minCount, int maxCount)
    {
        if (minCount == 0 && maxCount < 0) return json.AnyObject();
        if (minCount > 1) throw compiler.Error($"{pointer}/minProperties", $"minProperties {minCount} on an object without declared properties is not supported: declare the properties");
        var ws = json.Whitespace;
        if (maxCount == 0) return Seq(Literal("{"), ws, Literal("}"));
        var member = Seq(JsonGrammar.String(), ws, Literal(":"), ws, json.Value(), ws);
        var members = Seq(member, Repeat(Seq(Literal(","), ws, member), 0, maxCount < 0 ? -1 : maxCount - 1));
        return Seq(Literal("{"), ws, minCount == 1 ? members : Optional(members), Literal("}"));
    }

    public GrammarNode CompileArray(JsonElement schema, string pointer)
    {
        var ws = json.Whitespace;
        var prefix = new List<GrammarNode>();
        if (schema.TryGetProperty("prefixItems", out var prefixItems))
        {
            if (prefixItems.ValueKind != JsonValueKind.Array) throw compiler.Error($"{pointer}/prefixItems", "prefixItems must be an array of schemas");
            int i = 0;
            foreach (var item in prefixItems.EnumerateArray()) prefix.Add(compiler.Compile(item, $"{pointer}/prefixItems/{i++}"));
        }
        GrammarNode? items = json.Value();
        if (schema.TryGetProperty("items", out var itemsSchema))
        {
            if (itemsSchema.ValueKind == JsonValueKind.Array)
                throw compiler.Error($"{pointer}/items", "items as an array is the draft-07 tuple form: use prefixItems (and items for the rest)");
            items = itemsSchema.ValueKind == JsonValueKind.False ? null : compiler.Compile(itemsSchema, $"{pointer}/items");
        }
        int min = compiler.Count(schema, "minItems", pointer) ?? 0;
        int max = compiler.Count(schema, "maxItems", pointer) ?? -1;
        if (items is null) max = max < 0 ? prefix.Count : Math.Min(max, prefix.Count);
        if (max >= 0 && min > max) throw compiler.Error(pointer, $"minItems {min} is above the most items allowed ({max}): no array satisfies it");
        return Seq(Literal("["), ws, Elements(0), Literal("]"));

        GrammarNode Elements(int index)
        {
            if (index == max) return Empty;
            GrammarNode Separated(GrammarNode element) => index == 0 ? Seq(element, ws) : Seq(Literal(","), ws, element, ws);
            if (index >= prefix.Count)
            {
                int restMin = Math.Max(0, min - index), restMax = max < 0 ? -1 : max - index;
                var next = Seq(Literal(","), ws, items!, ws);
                if (index > 0) return Repeat(next, restMin, restMax);
                var run = Seq(items!, ws, Repeat(next, Math.Max(0, restMin - 1), restMax < 0 ? -1 : restMax - 1));
                return restMin >= 1 ? run : Optional(run);
            }
            var here = Seq(Separated(prefix[index]), Elements(index + 1));
            return index >= min ? Optional(here) : here;
        }
    }
}
