using System.Text.Json;

namespace OnnxDecoder.Modeling;

/// <summary>
/// Reads a Hugging Face config.json: the document is parsed here, its model_type picks the family
/// (<see cref="Families.FamilyRegistry"/>), and the family reads its own fields through
/// <see cref="ConfigFields"/>, whose errors name the file and the field.
/// </summary>
public static class HuggingFaceConfig
{
    public static DecoderConfig Read(string json, string source = "config.json")
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16, CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new ConfigException(source, "(document)", $"is not valid JSON: {e.Message}");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ConfigException(source, "(document)", "must be a JSON object");
            var fields = new ConfigFields(root, source);
            string modelType = fields.String("model_type") ?? throw new ConfigException(source, "model_type", "is missing");
            var family = Families.FamilyRegistry.Find(modelType)
                ?? throw new ConfigException(source, "model_type", $"'{modelType}' is not supported (supported: {string.Join(", ", Families.FamilyRegistry.ModelTypes)})");
            return family.ReadConfig(fields, modelType).Validate(source);
        }
    }

    public static ConfigException Missing(string source, string field) => new(source, field, "is missing");

    /// <summary>hidden_act / activation_function / hidden_activation names.</summary>
    public static Activation ParseActivation(string name, string source, string field) => name switch
    {
        "silu" or "swish" => Activation.Silu,
        "gelu" => Activation.Gelu,
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluTanh,
        _ => throw new ConfigException(source, field, $"'{name}' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh)"),
    };

    /// <summary>The rope_scaling block: absent or null means none.</summary>
    public static RopeScaling ReadRopeScaling(ConfigFields fields)
    {
        if (fields.Object("rope_scaling") is not { } reader) return new RopeScaling();
        string source = reader.Source;
        string typeName = reader.String("rope_type") ?? reader.String("type") ?? throw new ConfigException(source, "rope_scaling.rope_type", "is missing");
        var type = typeName switch
        {
            "default" => RopeScalingType.None,
            "linear" => RopeScalingType.Linear,
            "dynamic" => RopeScalingType.Dynamic,
            "llama3" => RopeScalingType.Llama3,
            "yarn" => RopeScalingType.Yarn,
            _ => throw new ConfigException(source, "rope_scaling.rope_type", $"'{typeName}' is not supported (linear, dynamic, llama3, yarn)"),
        };
        return new RopeScaling
        {
            Type = type,
            Factor = reader.Double("factor") ?? (type == RopeScalingType.None ? 1 : throw new ConfigException(source, "rope_scaling.factor", "is missing")),
            OriginalMaxPositions = reader.Int("original_max_position_embeddings"),
            LowFreqFactor = reader.Double("low_freq_factor") ?? 1,
            HighFreqFactor = reader.Double("high_freq_factor") ?? 4,
            BetaFast = reader.Double("beta_fast") ?? 32,
            BetaSlow = reader.Double("beta_slow") ?? 1,
            Truncate = reader.Bool("truncate") ?? true,
            AttentionFactor = reader.Double("attention_factor"),
        };
    }
}

/// <summary>Typed reads of one config.json object's fields; every error names the file and the field.</summary>
public readonly struct ConfigFields(JsonElement obj, string source, string prefix = "")
{
    public string Source => source;

    private JsonElement? Get(string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public bool Has(string name) => Get(name) is not null;

    /// <summary>Whether the field is written at all, null included (a null soft-cap turns it off; an absent one takes the default).</summary>
    public bool Present(string name) => obj.TryGetProperty(name, out _);

    /// <summary>A list of strings (layer_types), or null when absent.</summary>
    public IReadOnlyList<string>? Strings(string name, int maxCount = 4096)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() > maxCount)
            throw new ConfigException(source, prefix + name, $"must be a list of at most {maxCount} strings");
        var list = new List<string>();
        foreach (var item in v.EnumerateArray())
            list.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw new ConfigException(source, prefix + name, $"entry {item.GetRawText()} must be a string"));
        return list;
    }

    public int? Int(string name)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int value))
            throw new ConfigException(source, prefix + name, $"({v.GetRawText()}) must be a whole number that fits in 32 bits");
        return value;
    }

    public double? Double(string name)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double value))
            throw new ConfigException(source, prefix + name, $"({v.GetRawText()}) must be a number");
        return value;
    }

    public bool? Bool(string name)
    {
        if (Get(name) is not { } v) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ConfigException(source, prefix + name, $"({v.GetRawText()}) must be true or false"),
        };
    }

    public string? String(string name)
    {
        if (Get(name) is not { } v) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw new ConfigException(source, prefix + name, $"({v.GetRawText()}) must be a string");
    }

    /// <summary>A nested object (rope_scaling), or null when absent or null.</summary>
    public ConfigFields? Object(string name)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Object) throw new ConfigException(source, prefix + name, "must be an object or null");
        return new ConfigFields(v, source, prefix + name + ".");
    }

    public IReadOnlyList<int>? IntOrList(string name)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind == JsonValueKind.Number) return [Int(name)!.Value];
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() is 0 or > 64)
            throw new ConfigException(source, prefix + name, "must be a token id or a list of 1 to 64 token ids");
        var list = new List<int>();
        foreach (var item in v.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id))
                throw new ConfigException(source, prefix + name, $"entry {item.GetRawText()} must be a whole number");
            list.Add(id);
        }
        return list;
    }

    /// <summary>A list of whole numbers, possibly empty (mlp_only_layers), or null when absent.</summary>
    public IReadOnlyList<int>? Ints(string name, int maxCount = 4096)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() > maxCount)
            throw new ConfigException(source, prefix + name, $"must be a list of at most {maxCount} whole numbers");
        var list = new List<int>();
        foreach (var item in v.EnumerateArray())
            list.Add(item.ValueKind == JsonValueKind.Number && item.TryGetInt32(out int i) ? i
                : throw new ConfigException(source, prefix + name, $"entry {item.GetRawText()} must be a whole number"));
        return list;
    }

    /// <summary>A list of numbers (longrope's short_factor / long_factor).</summary>
    public IReadOnlyList<double>? Doubles(string name, int maxCount = 1 << 16)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() > maxCount)
            throw new ConfigException(source, prefix + name, $"must be a list of at most {maxCount} numbers");
        var list = new List<double>();
        foreach (var item in v.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetDouble(out double x))
                throw new ConfigException(source, prefix + name, $"entry {item.GetRawText()} must be a number");
            list.Add(x);
        }
        return list;
    }
}
