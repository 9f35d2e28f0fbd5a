using System.Text.Json;
using OnnxDecoder.Onnx;

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
