using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json's post_processor, or the one tokenizer_config.json implies when the file has none.</summary>
internal sealed class TokenizerJsonPostProcessorReader(string path) : TokenizerJsonFields(path)
{
    private int[] SpecialIds(string token, AddedVocabulary added, BpeModel model, string field) =>
        [added.ByContent(token)?.Id ?? model.TokenToId(token) ?? throw Bad($"{field}: token '{token}' is neither an added token nor in model.vocab")];

    public IPostProcessor? PostProcessor(JsonElement e, string field, AddedVocabulary added, BpeModel model, int depth)
    {
        CheckDepth(depth, field);
        string type = TypeOf(e, field);
        switch (type)
        {
            case "ByteLevel":
                return null; // offsets only
            case "TemplateProcessing":
            {
                var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                if (e.TryGetProperty("special_tokens", out var table) && table.ValueKind == JsonValueKind.Object)
                    foreach (var entry in table.EnumerateObject())
                    {
                        string f = $"{field}.special_tokens['{entry.Name}']";
                        if (entry.Value.ValueKind != JsonValueKind.Object) throw Bad($"{f} must be an object");
                        specials[entry.Name] = Array(entry.Value, "ids", f).Select((id, i) => Id(id, $"{f}.ids[{i}]")).ToArray();
                    }
                var template = new List<int[]?>();
                var single = Array(e, "single", field);
                for (int i = 0; i < single.Count; i++)
                {
                    string f = $"{field}.single[{i}]";
                    if (single[i].ValueKind == JsonValueKind.Object && single[i].TryGetProperty("Sequence", out _)) template.Add(null);
                    else if (single[i].ValueKind == JsonValueKind.Object && single[i].TryGetProperty("SpecialToken", out var special)
                        && special.ValueKind == JsonValueKind.Object && String(special, "id", f) is { } name)
                        template.Add(specials.TryGetValue(name, out var ids) ? ids : throw Bad($"{f} names '{name}', which special_tokens does not list"));
                    else throw Bad($"{f} must be {{\"Sequence\": ...}} or {{\"SpecialToken\": {{\"id\": ...}}}}");
                }
                return new TemplatePostProcessor(template);
            }
            case "RobertaProcessing" or "BertProcessing":
            {
                int Token(string name)
                {
                    if (!e.TryGetProperty(name, out var pair) || pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2)
                        throw Bad($"{field}.{name} must be [token, id]");
                    return Id(pair[1], $"{field}.{name}[1]");
                }
                return new BosEosPostProcessor(Token("cls"), Token("sep"));
            }
            case "Sequence":
            {
                var processors = Array(e, "processors", field)
                    .Select((p, i) => PostProcessor(p, $"{field}.processors[{i}]", added, model, depth + 1)).OfType<IPostProcessor>().ToList();
                return processors.Count == 0 ? null : new SequencePostProcessor(processors);
            }
            default:
                throw Unsupported(field, type, "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence");
        }
    }

    /// <summary>tokenizer_config.json's add_bos_token / add_eos_token with its bos_token / eos_token
    /// (a string or {"content": ...}), for a tokenizer.json without a post-processor.</summary>
    public IPostProcessor? FromConfig(string? configPath, AddedVocabulary added, BpeModel model)
    {
        if (configPath is null || !File.Exists(configPath)) return null;
        if (new FileInfo(configPath).Length > 16L << 20) throw new ModelFormatException(configPath, "is over the 16 MiB limit for tokenizer_config.json");
        try
        {
            using var config = JsonDocument.Parse(File.ReadAllBytes(configPath), new JsonDocumentOptions { MaxDepth = 64 });
            var root = config.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(configPath, "must be a JSON object");
            int? Wanted(string flag, string tokenField)
            {
                if (!root.TryGetProperty(flag, out var on) || on.ValueKind != JsonValueKind.True) return null;
                string? token = root.TryGetProperty(tokenField, out var t) ? t.ValueKind switch
                {
                    JsonValueKind.String => t.GetString(),
                    JsonValueKind.Object when t.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                    _ => null,
                } : null;
                if (token is null) throw new ModelFormatException(configPath, $"{flag} is true but {tokenField} is not a string or {{\"content\": ...}}");
                return added.ByContent(token)?.Id ?? model.TokenToId(token)
                    ?? throw new ModelFormatException(configPath, $"{tokenField} '{token}' is not a token of {System.IO.Path.GetFileName(Path)}");
            }
            int? bos = Wanted("add_bos_token", "bos_token"), eos = Wanted("add_eos_token", "eos_token");
            return bos is null && eos is null ? null : new BosEosPostProcessor(bos, eos);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(configPath, $"is not valid JSON ({e.Message})", e);
        }
    }
}
