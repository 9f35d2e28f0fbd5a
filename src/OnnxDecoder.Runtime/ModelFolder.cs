using System.Text.Json;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Runtime;

/// <summary>
/// A model folder as the exporter writes it (and onnxruntime-genai reads it): genai_config.json,
/// the model file it names, and tokenizer files. genai_config.json is hostile input: size-capped,
/// typed, and its file name may not leave the folder. The graph itself is checked against it when
/// a <see cref="DecoderSession"/> opens the model.
/// </summary>
public sealed record ModelFolder
{
    public const string ConfigFileName = "genai_config.json";
    private const long MaxConfigBytes = 1 << 20;

    public required string Directory { get; init; }
    public required string ModelPath { get; init; }
    public required string ModelType { get; init; }
    public required int NumLayers { get; init; }
    public required int NumKvHeads { get; init; }
    public required int NumHeads { get; init; }
    public required int HeadSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int VocabSize { get; init; }
    public required int ContextLength { get; init; }
    public required int BosTokenId { get; init; }
    public required IReadOnlyList<int> EosTokenIds { get; init; }
    public required int PadTokenId { get; init; }
    /// <summary>past and present share one KV buffer (GroupQueryAttention graphs).</summary>
    public required bool PastPresentShareBuffer { get; init; }
    public required string PastKeyPattern { get; init; }
    public required string PastValuePattern { get; init; }
    public required string PresentKeyPattern { get; init; }
    public required string PresentValuePattern { get; init; }
    /// <summary>The position ids input the config names (model.decoder.inputs.position_ids); null: none
    /// (a graph that derives positions from the attention mask).</summary>
    public string? PositionIdsName { get; init; }
    /// <summary>genai_config.json's <c>search</c> values, as generation defaults that a request's own values override.</summary>
    public SearchDefaults Search { get; init; } = SearchDefaults.None;

    public string ConfigPath => Path.Combine(Directory, ConfigFileName);
    public string PastKeyName(int layer) => GraphContract.Layer(PastKeyPattern, layer);
    public string PastValueName(int layer) => GraphContract.Layer(PastValuePattern, layer);
    public string PresentKeyName(int layer) => GraphContract.Layer(PresentKeyPattern, layer);
    public string PresentValueName(int layer) => GraphContract.Layer(PresentValuePattern, layer);

    /// <summary>Reads and validates <c>genai_config.json</c> in <paramref name="directory"/>.</summary>
    public static ModelFolder Open(string directory)
    {
        string folder = Path.GetFullPath(directory);
        string configPath = Path.Combine(folder, ConfigFileName);
        if (!System.IO.Directory.Exists(folder)) throw new ModelFormatException(folder, "model folder not found");
        if (!File.Exists(configPath)) throw new ModelFormatException(configPath, "not found: a model folder needs genai_config.json (export one with `onnx-decoder export`)");
        long size = new FileInfo(configPath).Length;
        if (size > MaxConfigBytes) throw new ModelFormatException(configPath, $"is {size} bytes, over the {MaxConfigBytes}-byte limit");

        JsonDocument document;
        try
        {
            // Strict UTF-8 first: System.Text.Json checks string contents only when they are read.
            string text = new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(configPath));
            document = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (System.Text.DecoderFallbackException)
        {
            throw new ModelFormatException(configPath, "is not valid UTF-8");
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(configPath, $"is not valid JSON ({e.Message})");
        }
        using (document)
        {
            var fields = new Fields(document.RootElement, configPath);
            var model = fields.Object("model");
            var decoder = model.Object("decoder");
            var inputs = decoder.Object("inputs");
            var outputs = decoder.Object("outputs");
            var search = fields.OptionalObject("search");

            string fileName = decoder.String("filename");
            if (fileName.Length == 0 || fileName != Path.GetFileName(fileName) || fileName is "." or "..")
                throw new ModelFormatException(configPath, $"model.decoder.filename '{fileName}' must be a plain file name inside the model folder");
            string modelPath = Path.Combine(folder, fileName);
            if (!File.Exists(modelPath)) throw new ModelFormatException(configPath, $"model.decoder.filename '{fileName}' does not exist in {folder}");

            var result = new ModelFolder
            {
                Directory = folder,
                ModelPath = modelPath,
                ModelType = model.String("type"),
                NumLayers = decoder.Int("num_hidden_layers", 1, 4096),
                NumKvHeads = decoder.Int("num_key_value_heads", 1, 4096),
                NumHeads = decoder.Int("num_attention_heads", 1, 4096),
                HeadSize = decoder.Int("head_size", 1, 65536),
                HiddenSize = decoder.Int("hidden_size", 1, 1 << 20),
                VocabSize = model.Int("vocab_size", 1, 1 << 24),
                ContextLength = model.Int("context_length", 1, 1 << 24),
                BosTokenId = model.Int("bos_token_id", 0, int.MaxValue),
                EosTokenIds = model.IntOrList("eos_token_id"),
                PadTokenId = model.Int("pad_token_id", 0, int.MaxValue),
                PastPresentShareBuffer = search?.Bool("past_present_share_buffer") ?? false,
                PastKeyPattern = inputs.String("past_key_names"),
                PastValuePattern = inputs.String("past_value_names"),
                PresentKeyPattern = outputs.String("present_key_names"),
                PresentValuePattern = outputs.String("present_value_names"),
                PositionIdsName = inputs.OptionalString("position_ids"),
                Search = search is { } values ? ReadSearch(values, configPath) : SearchDefaults.None,
            };
            foreach (var (name, value) in new[] { ("model.bos_token_id", result.BosTokenId), ("model.pad_token_id", result.PadTokenId) }.Concat(result.EosTokenIds.Select(e => ("model.eos_token_id", e))))
                if (value >= result.VocabSize) throw new ModelFormatException(configPath, $"{name} ({value}) must be below model.vocab_size ({result.VocabSize})");
            if (result.NumHeads % result.NumKvHeads != 0)
                throw new ModelFormatException(configPath, $"model.decoder.num_key_value_heads ({result.NumKvHeads}) must divide num_attention_heads ({result.NumHeads})");
            foreach (var pattern in new[] { result.PastKeyPattern, result.PastValuePattern, result.PresentKeyPattern, result.PresentValuePattern })
                if (!pattern.Contains("%d", StringComparison.Ordinal)) throw new ModelFormatException(configPath, $"KV name pattern '{pattern}' must contain %d");
            return result;
        }
    }

    /// <summary>
    /// The <c>search</c> values as onnxruntime-genai reads them: without <c>do_sample</c> decoding is
    /// greedy and temperature, top_k and top_p do not apply; the repetition penalty applies either
    /// way; top_p 0 is off; <c>max_length</c> counts the prompt. Each value is checked against
    /// <see cref="SamplingParameters"/>. Beam search is refused; length_penalty, early_stopping,
    /// no_repeat_ngram_size and diversity_penalty only shape beam search or are not applied.
    /// </summary>
    private static SearchDefaults ReadSearch(Fields search, string configPath)
    {
        if (search.OptionalNumber("num_beams") is { } beams && beams > 1)
            throw new ModelFormatException(configPath, $"search.num_beams is {beams}; beam search is not supported: set it to 1");
        if (search.OptionalNumber("num_return_sequences") is { } returned && returned > 1)
            throw new ModelFormatException(configPath, $"search.num_return_sequences is {returned}; one sequence per prompt is supported: set it to 1");
        var sampling = new SamplingOptions();
        bool doSample = search.Bool("do_sample") ?? false;
        foreach (var parameter in SamplingParameters.All)
        {
            if (parameter == SamplingParameters.Seed || search.OptionalNumber(parameter.Name) is not { } value) continue;
            if (!parameter.Contains(value)) throw new ModelFormatException(configPath, parameter.OutOfRangeMessage($"search.{parameter.Name}", value));
            if (parameter == SamplingParameters.TopP && value == 0) continue; // genai: top_p 0 (its default) is off
            if (doSample || parameter == SamplingParameters.RepetitionPenalty) sampling = sampling.Set(parameter, value);
        }
        // onnxruntime-genai's defaults where do_sample is set and a value is absent: temperature 1, top_k 50.
        if (doSample && search.OptionalNumber("temperature") is null) sampling = sampling with { Temperature = 1 };
        if (doSample && search.OptionalNumber("top_k") is null) sampling = sampling with { TopK = 50 };
        int? maxLength = null;
        if (search.OptionalNumber("max_length") is { } length && length != 0) // genai: 0 is the context length
            maxLength = length is >= 1 and <= int.MaxValue && Math.Floor(length) == length ? (int)length
                : throw new ModelFormatException(configPath, $"search.max_length ({length}) must be a whole number from 1 to {int.MaxValue}");
        return new SearchDefaults(sampling, maxLength);
    }

    /// <summary>Typed reads whose errors name the file and the JSON path.</summary>
    private readonly struct Fields(JsonElement element, string file, string path = "")
    {
        private JsonElement Required(string name)
        {
            if (element.ValueKind != JsonValueKind.Object || !element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
                throw new ModelFormatException(file, $"{path}{name} is missing");
            return value;
        }

        public Fields Object(string name)
        {
            var value = Required(name);
            if (value.ValueKind != JsonValueKind.Object) throw new ModelFormatException(file, $"{path}{name} must be an object");
            return new Fields(value, file, $"{path}{name}.");
        }

        public Fields? OptionalObject(string name) =>
            element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Object ? new Fields(value, file, $"{path}{name}.") : null;

        public string String(string name)
        {
            var value = Required(name);
            if (value.ValueKind != JsonValueKind.String) throw new ModelFormatException(file, $"{path}{name} must be a string");
            string text = value.GetString()!;
            if (text.Length > 4096) throw new ModelFormatException(file, $"{path}{name} is longer than 4096 characters");
            return text;
        }

        public int Int(string name, int min, int max)
        {
            var value = Required(name);
            if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int number) || number < min || number > max)
                throw new ModelFormatException(file, $"{path}{name} ({value.GetRawText()}) must be a whole number from {min} to {max}");
            return number;
        }

        public string? OptionalString(string name) =>
            element.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? String(name) : null;

        public double? OptionalNumber(string name)
        {
            if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
            if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number) || !double.IsFinite(number))
                throw new ModelFormatException(file, $"{path}{name} ({value.GetRawText()}) must be a number");
            return number;
        }

        public bool? Bool(string name)
        {
            if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
            return value.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new ModelFormatException(file, $"{path}{name} must be true or false"),
            };
        }

        public IReadOnlyList<int> IntOrList(string name)
        {
            var value = Required(name);
            if (value.ValueKind == JsonValueKind.Number) return [Int(name, 0, int.MaxValue)];
            if (value.ValueKind != JsonValueKind.Array || value.GetArrayLength() is 0 or > 64)
                throw new ModelFormatException(file, $"{path}{name} must be a token id or a list of 1 to 64 token ids");
            var ids = new List<int>();
            foreach (var item in value.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id) || id < 0)
                    throw new ModelFormatException(file, $"{path}{name} entry {item.GetRawText()} must be a non-negative whole number");
                ids.Add(id);
            }
            return ids;
        }
    }
}

/// <summary>Generation defaults from genai_config.json's <c>search</c>.</summary>
/// <param name="Sampling">Sampling defaults (greedy unless the folder sets do_sample).</param>
/// <param name="MaxLength">Prompt plus generated tokens at most; null: the context length.</param>
public sealed record SearchDefaults(SamplingOptions Sampling, int? MaxLength)
{
    public static SearchDefaults None { get; } = new(new SamplingOptions(), null);

    /// <summary>Tokens a generation after <paramref name="promptLength"/> may add: <paramref name="requested"/>
    /// when given, else <paramref name="fallback"/>, never past <see cref="MaxLength"/>.</summary>
    public int MaxNewTokens(int promptLength, int? requested, int fallback)
    {
        int limit = requested ?? fallback;
        return MaxLength is { } max && requested is null ? Math.Max(1, Math.Min(limit, max - promptLength)) : limit;
    }
}
