namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Every family the exporter knows, in one list: config.json's model_type picks a family here, a
/// GGUF's general.architecture too. Adding a family is one file in Families/ and one entry below.
/// </summary>
public static class FamilyRegistry
{
    public static IReadOnlyList<DecoderFamily> All { get; } = [new Llama(), new Mixtral(), new Qwen2Moe(), new Gpt2(), new Qwen3(), new Phi3(), new Gemma2(),
        new Granite(), new Olmo2(), new SmolLM3(), new Gemma3(), new Phi(), new Qwen3Moe(), new GptOss(),
        new Gemma(), new Starcoder2()];

    /// <summary>Every supported model_type, in registry order.</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = [.. All.SelectMany(f => f.ModelTypes)];

    /// <summary>The family that reads <paramref name="modelType"/>, or null.</summary>
    public static DecoderFamily? Find(string modelType) => All.FirstOrDefault(f => f.ModelTypes.Contains(modelType, StringComparer.Ordinal));

    /// <summary>The family that builds <paramref name="config"/>.</summary>
    public static DecoderFamily For(DecoderConfig config) => Find(config.ModelType)
        ?? throw new ConfigException("config", "model_type", $"'{config.ModelType}' is not supported (supported: {string.Join(", ", ModelTypes)})");

    /// <summary>The family that reads a GGUF of <paramref name="architecture"/>, or null.</summary>
    public static DecoderFamily? ForGguf(string architecture) => All.FirstOrDefault(f => f.GgufArchitecture == architecture);
}
