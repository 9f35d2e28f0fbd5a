using System.Text.Json;

namespace OnnxDecoder.Modeling;

/// <summary>
/// Reads a Hugging Face config.json: the document is parsed here, its model_type picks the family
/// (<see cref="Families.FamilyRegistry"/>), and the family reads its own fields through
/// <see cref="ConfigFields"/>, whose errors name the file and the field.
/// </summary>
public static class HuggingFaceConfig
{
    public static DecoderConfig Read(string json, string source = "config.json") => ReadCheckpoint(json, source).Decoder;

    /// <summary>As <see cref="Read"/>, and says whether the decoder came out of a multimodal checkpoint
    /// (<see cref="MultimodalCheckpoints"/>: the top-level model_type names a wrapper, the decoder is its text_config).</summary>
    public static HuggingFaceCheckpointConfig ReadCheckpoint(string json, string source = "config.json")
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
            if (MultimodalCheckpoints.Find(modelType) is { } wrapper) return MultimodalCheckpoints.ReadTextDecoder(root, wrapper, source);
            var family = Families.FamilyRegistry.Find(modelType)
                ?? throw new ConfigException(source, "model_type", $"'{modelType}' is not supported (supported: {string.Join(", ", Families.FamilyRegistry.ModelTypes)})");
            return new HuggingFaceCheckpointConfig(family.ReadConfig(fields, modelType).Validate(source), null, []);
        }
    }

    public static ConfigException Missing(string source, string field) => new(source, field, "is missing");

    /// <summary>hidden_size / num_attention_heads: the head width where config.json gives no head_dim (or the class reads none).</summary>
    public static int DividedHeadDim(string source, int hidden, int heads, bool readsHeadDim = true) => heads > 0 && hidden % heads == 0 ? hidden / heads
        : throw new ConfigException(source, "hidden_size",
            $"({hidden}) must be divisible by num_attention_heads ({heads})" + (readsHeadDim ? " when head_dim is not given" : ""));

    /// <summary>
    /// The fields most decoder config classes share (sizes, norm epsilon, rotary base and scaling, activation,
    /// tied embeddings, bos/eos), read with <paramref name="defaults"/>, the family config class's own; the family
    /// adds what is its own to the result with <c>with</c>.
    /// </summary>
    public static DecoderConfig ReadShared(ConfigFields r, string modelType, SharedConfigDefaults defaults)
    {
        string source = r.Source;
        int hidden = r.RequiredInt("hidden_size");
        int heads = r.RequiredInt("num_attention_heads");
        int headDim = (defaults.ReadsHeadDim ? r.Int("head_dim") ?? defaults.HeadDim : null) ?? DividedHeadDim(source, hidden, heads, defaults.ReadsHeadDim);
        return new DecoderConfig
        {
            ModelType = modelType,
            HiddenSize = hidden,
            IntermediateSize = defaults.IntermediateSize(r),
            NumLayers = r.RequiredInt("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = r.Int("num_key_value_heads") ?? defaults.NumKvHeads ?? heads,
            HeadDim = headDim,
            VocabSize = r.Int("vocab_size") ?? defaults.VocabSize ?? throw Missing(source, "vocab_size"),
            MaxPositions = r.Int("max_position_embeddings") ?? defaults.MaxPositions ?? throw Missing(source, "max_position_embeddings"),
            NormEps = r.Double(defaults.NormEpsField) ?? defaults.NormEps,
            RopeTheta = r.Double("rope_theta") ?? defaults.RopeTheta,
            RopeScaling = defaults.RopeScaling(r),
            HiddenAct = ParseActivation(r.String(defaults.ActivationField) ?? defaults.Activation, source, defaults.ActivationField),
            TieWordEmbeddings = r.Bool("tie_word_embeddings") ?? defaults.TieWordEmbeddings,
            BosTokenId = r.Int("bos_token_id") ?? defaults.BosTokenId,
            EosTokenIds = r.IntOrList("eos_token_id") ?? defaults.EosTokenIds,
        };
    }

    /// <summary>hidden_act / activation_function / hidden_activation names.</summary>
    public static Activation ParseActivation(string name, string source, string field) => name switch
    {
        "silu" or "swish" => Activation.Silu,
        "gelu" => Activation.Gelu,
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluTanh,
        _ => throw new ConfigException(source, field, $"'{name}' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh)"),
    };

    /// <summary>layer_types as one flag a layer (true: sliding_attention), or null when absent.</summary>
    public static bool[]? ReadSlidingLayerTypes(ConfigFields r)
    {
        if (r.Strings("layer_types") is not { } types) return null;
        if (types.Any(t => t is not ("sliding_attention" or "full_attention")))
            throw new ConfigException(r.Source, "layer_types", "entries must be sliding_attention or full_attention");
        return [.. types.Select(t => t == "sliding_attention")];
    }

    /// <summary>One flag a layer for num_hidden_layers layers (clamped here: Validate names a count out of range).</summary>
    public static bool[] LayerFlags(int layers, Func<int, bool> flag) => [.. Enumerable.Range(0, Math.Clamp(layers, 0, DecoderConfig.MaxLayers)).Select(flag)];

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

/// <summary>
/// How one config class spells and defaults the fields <see cref="HuggingFaceConfig.ReadShared"/> reads (LlamaConfig's
/// unless set); a null default marks a field config.json must give.
/// </summary>
public sealed record SharedConfigDefaults
{
    /// <summary>Reads the MLP width (MoE families read their experts' width).</summary>
    public Func<ConfigFields, int> IntermediateSize { get; init; } = r => r.RequiredInt("intermediate_size");
    /// <summary>Null: num_attention_heads (no grouped-query attention).</summary>
    public int? NumKvHeads { get; init; }
    /// <summary>Whether the config class reads head_dim at all (PhiAttention always divides hidden_size by the heads).</summary>
    public bool ReadsHeadDim { get; init; } = true;
    /// <summary>Null: hidden_size / num_attention_heads, which must divide.</summary>
    public int? HeadDim { get; init; }
    public int? VocabSize { get; init; }
    public int? MaxPositions { get; init; }
    public string NormEpsField { get; init; } = "rms_norm_eps";
    public double NormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000;
    /// <summary>Reads rope_scaling (Phi-3 reads its own longrope block).</summary>
    public Func<ConfigFields, RopeScaling> RopeScaling { get; init; } = HuggingFaceConfig.ReadRopeScaling;
    public string ActivationField { get; init; } = "hidden_act";
    public string Activation { get; init; } = "silu";
    public bool TieWordEmbeddings { get; init; }
    public int BosTokenId { get; init; } = 1;
    public IReadOnlyList<int> EosTokenIds { get; init; } = [2];
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

    /// <summary>A whole number config.json must give.</summary>
    public int RequiredInt(string name) => Int(name) ?? throw new ConfigException(source, prefix + name, "is missing");

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
