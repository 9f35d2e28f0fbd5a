using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Modeling;

/// <summary>
/// A multimodal Hugging Face checkpoint whose text decoder is one of our families: config.json's top-level
/// model_type names the wrapper, the decoder's fields sit under text_config, and its tensors under the
/// wrapper's language-model prefixes (<see cref="MultimodalCheckpoints"/>). Only the text decoder is exported.
/// </summary>
/// <param name="DefaultTextModelType">The text_config model_type the wrapper's config class assumes when text_config omits it.</param>
/// <param name="TextModelTypes">The text model_types we export under this wrapper.</param>
public sealed record MultimodalWrapper(string ModelType, string Architecture, string DefaultTextModelType, IReadOnlyList<string> TextModelTypes)
{
    /// <summary>One line for inspect, export and metadata.</summary>
    public string Description => $"text decoder of a {ModelType} ({Architecture}) checkpoint; vision tower and projector not exported";
}

/// <summary>A Hugging Face config.json read for export: the decoder's config and, for a multimodal checkpoint,
/// the wrapper it came out of and the top-level fields that were not read (image token ids, vision_config, ...).</summary>
public sealed record HuggingFaceCheckpointConfig(DecoderConfig Decoder, MultimodalWrapper? Wrapper, IReadOnlyList<string> UnreadFields);

/// <summary>
/// The multimodal wrappers whose text decoder we export, in one table, with what transformers does for each
/// (configuration_gemma3.py, configuration_mistral3.py, configuration_llava.py; the weight prefixes are the
/// _checkpoint_conversion_mapping of Gemma3ForConditionalGeneration, Mistral3ForConditionalGeneration and
/// LlavaForConditionalGeneration, which all agree):
/// <code>
///   config:   text_config read by the text model's own config class; fields it omits take that class's
///             defaults (transformers writes a nested config as its difference from the class defaults, so a
///             released text_config is sparse); top-level bos_token_id / eos_token_id, where given, win over
///             text_config's (GenerationConfig.from_model_config reads the top level first); tie_word_embeddings
///             is text_config's (PreTrainedModel.tie_weights reads get_text_config(decoder=True))
///   weights:  language_model.model.*   -> model.*      (original releases)
///             model.language_model.*   -> model.*      (saved by transformers 4.52 and later)
///             language_model.lm_head.* -> lm_head.*;   lm_head.* stays
///             vision_tower.*, multi_modal_projector.* (and under model.) are not read
/// </code>
/// </summary>
public static class MultimodalCheckpoints
{
    public static IReadOnlyList<MultimodalWrapper> All { get; } =
    [
        // Gemma3Config always builds a Gemma3TextConfig from text_config.
        new("gemma3", "Gemma3ForConditionalGeneration", "gemma3_text", ["gemma3_text"]),
        // Mistral3Config and LlavaConfig build CONFIG_MAPPING[text_config.model_type], defaulting the type.
        new("mistral3", "Mistral3ForConditionalGeneration", "mistral", ["mistral"]),
        new("llava", "LlavaForConditionalGeneration", "llama", ["llama", "mistral", "qwen2"]),
    ];

    /// <summary>The wrapper a top-level model_type names, or null for a plain text checkpoint.</summary>
    public static MultimodalWrapper? Find(string modelType) => All.FirstOrDefault(w => w.ModelType == modelType);

    /// <summary>
    /// The text config classes' __init__ defaults for the fields our readers take (values a sparse text_config
    /// leaves out); a default that the class derives (head_dim = hidden_size / heads, num_key_value_heads =
    /// heads when None) is left for the family reader to derive from the fields actually given.
    /// Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config (transformers 4.50's signatures).
    /// </summary>
    private static readonly IReadOnlyDictionary<string, string> TextConfigDefaults = new Dictionary<string, string>
    {
        ["gemma3_text"] = """
            {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
             "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
             "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "bos_token_id": 2, "eos_token_id": 1,
             "tie_word_embeddings": true, "rope_theta": 1000000.0, "attention_bias": false, "query_pre_attn_scalar": 256,
             "sliding_window": 4096, "final_logit_softcapping": null, "rope_scaling": null, "rope_local_base_freq": 10000.0,
             "sliding_window_pattern": 6}
            """,
        ["llama"] = """
            {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
             "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false, "rope_theta": 10000.0,
             "rope_scaling": null, "attention_bias": false, "mlp_bias": false}
            """,
        ["mistral"] = """
            {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_act": "silu", "max_position_embeddings": 131072,
             "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": false,
             "rope_theta": 10000.0, "sliding_window": 4096}
            """,
        ["qwen2"] = """
            {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu", "max_position_embeddings": 32768,
             "rms_norm_eps": 1e-6, "tie_word_embeddings": false, "rope_theta": 10000.0, "rope_scaling": null,
             "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 28}
            """,
    };

    /// <summary>Top-level fields of the wrapper that the text decoder takes (generation's stop and start tokens).</summary>
    private static readonly string[] TopLevelOverrides = ["bos_token_id", "eos_token_id"];

    /// <summary>Top-level fields that say nothing about the model (not listed as unread).</summary>
    private static readonly string[] Bookkeeping = ["model_type", "architectures", "text_config", "torch_dtype", "dtype", "transformers_version", "_name_or_path"];

    /// <summary>Stored prefix -> the text model's own (Gemma3ForCausalLM, MistralForCausalLM, LlamaForCausalLM) prefix.</summary>
    public static IReadOnlyList<(string Stored, string Text)> TextPrefixes { get; } =
        [("language_model.model.", "model."), ("model.language_model.", "model."), ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head.")];

    /// <summary>The vision tower's and projector's prefixes: their tensors are skipped without reading their data.</summary>
    public static IReadOnlyList<string> NotExportedPrefixes { get; } =
        ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."];

    public static bool IsNotExported(string stored) => NotExportedPrefixes.Any(p => stored.StartsWith(p, StringComparison.Ordinal));

    /// <summary>The text model's name for a stored tensor, or null when it sits under none of <see cref="TextPrefixes"/>.</summary>
    public static string? TextName(string stored)
    {
        foreach (var (storedPrefix, textPrefix) in TextPrefixes)
            if (stored.StartsWith(storedPrefix, StringComparison.Ordinal)) return textPrefix + stored[storedPrefix.Length..];
        return null;
    }

    /// <summary>The stored names a text tensor may have (for errors about a missing one).</summary>
    public static IEnumerable<string> StoredCandidates(string textName) => TextPrefixes
        .Where(p => textName.StartsWith(p.Text, StringComparison.Ordinal))
        .Select(p => p.Stored + textName[p.Text.Length..]);

    /// <summary>
    /// Reads the text decoder's config out of a wrapper's config.json (<paramref name="root"/>). Errors about a field of
    /// text_config name it as text_config.FIELD; one about a top-level field the decoder takes keeps its own name.
    /// </summary>
    internal static HuggingFaceCheckpointConfig ReadTextDecoder(JsonElement root, MultimodalWrapper wrapper, string source)
    {
        if (!root.TryGetProperty("text_config", out var text) || text.ValueKind == JsonValueKind.Null)
            throw new ConfigException(source, "text_config", $"is missing: a {wrapper.ModelType} checkpoint's text decoder is described there (re-save the config with its text_config)");
        if (text.ValueKind != JsonValueKind.Object)
            throw new ConfigException(source, "text_config", $"must be an object (the text decoder's config), not {text.ValueKind.ToString().ToLowerInvariant()}");
        var textFields = new ConfigFields(text, source, "text_config.");
        string textType = textFields.String("model_type") ?? wrapper.DefaultTextModelType;
        if (!wrapper.TextModelTypes.Contains(textType))
            throw new ConfigException(source, "text_config.model_type",
                $"'{textType}' is not supported inside a {wrapper.ModelType} checkpoint (supported: {string.Join(", ", wrapper.TextModelTypes)})");
        var family = Families.FamilyRegistry.Find(textType)
            ?? throw new ConfigException(source, "text_config.model_type", $"'{textType}' has no family (supported: {string.Join(", ", Families.FamilyRegistry.ModelTypes)})");

        // The text config class's defaults, then what text_config gives, then the top-level generation tokens.
        var merged = JsonNode.Parse(TextConfigDefaults[textType])!.AsObject();
        foreach (var field in text.EnumerateObject()) merged[field.Name] = JsonNode.Parse(field.Value.GetRawText());
        merged["model_type"] = textType;
        var fromTopLevel = new HashSet<string>(StringComparer.Ordinal);
        foreach (var field in TopLevelOverrides)
            if (root.TryGetProperty(field, out var value) && value.ValueKind != JsonValueKind.Null)
            {
                merged[field] = JsonNode.Parse(value.GetRawText());
                fromTopLevel.Add(field);
            }

        using var document = JsonDocument.Parse(merged.ToJsonString(), new JsonDocumentOptions { MaxDepth = 16 });
        DecoderConfig config;
        try
        {
            config = family.ReadConfig(new ConfigFields(document.RootElement, source), textType).Validate(source);
        }
        catch (ConfigException e) when (e.FileName == source && !e.Field.StartsWith("text_config.", StringComparison.Ordinal))
        {
            string root0 = e.Field.Split('.')[0];
            throw new ConfigException(source, fromTopLevel.Contains(root0) ? e.Field : "text_config." + e.Field, e.Problem);
        }
        var unread = root.EnumerateObject().Select(p => p.Name)
            .Where(n => !Bookkeeping.Contains(n) && !TopLevelOverrides.Contains(n)).Order(StringComparer.Ordinal).ToList();
        return new HuggingFaceCheckpointConfig(config, wrapper, unread);
    }
}
