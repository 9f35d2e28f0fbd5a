using System.Text.Json;

namespace OnnxDecoder.Exporters.Synth;

/// <summary>
/// A real Hugging Face tokenizer for a synth checkpoint: its size (highest id in tokenizer.json's
/// model vocabulary and added tokens, plus one) and its BOS / EOS ids (tokenizer_config.json's
/// bos_token and eos_token; a tokenizer without a BOS token, like Qwen's, begins with its EOS).
/// The files are a third party's: read as hostile input, copied into the synth folder, never committed.
/// </summary>
public sealed record SynthVocabulary(string Folder, int Size, int BosTokenId, int EosTokenId)
{
    private const long MaxFileBytes = 64L << 20;
    private static readonly string[] Files = ["tokenizer.json", "tokenizer_config.json"];

    public static SynthVocabulary Read(string folder)
    {
        foreach (var name in Files)
        {
            var file = new FileInfo(Path.Combine(folder, name));
            if (!file.Exists) throw new FileNotFoundException($"--tokenizer {folder}: {name} is missing (a Hugging Face tokenizer folder has tokenizer.json and tokenizer_config.json)");
            if (file.Length > MaxFileBytes) throw new InvalidDataException($"{file.FullName}: {file.Length} bytes is over the {MaxFileBytes >> 20} MiB limit for tokenizer files");
        }
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        int highest = -1;
        string tokenizerPath = Path.Combine(folder, "tokenizer.json");
        using (var tokenizer = JsonDocument.Parse(File.ReadAllBytes(tokenizerPath)))
        {
            var root = tokenizer.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || !model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{tokenizerPath}: model.vocab must be an object of token -> id (a BPE tokenizer.json)");
            foreach (var entry in vocab.EnumerateObject()) highest = Math.Max(highest, Id(entry.Value, tokenizerPath, "model.vocab"));
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var token in added.EnumerateArray())
                {
                    if (!token.TryGetProperty("id", out var id) || !token.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                        throw new InvalidDataException($"{tokenizerPath}: each added_tokens entry needs an id and a content string");
                    int value = Id(id, tokenizerPath, "added_tokens");
                    ids[content.GetString()!] = value;
                    highest = Math.Max(highest, value);
                }
            foreach (var entry in vocab.EnumerateObject()) ids.TryAdd(entry.Name, entry.Value.GetInt32());
        }
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        using var config = JsonDocument.Parse(File.ReadAllBytes(configPath));
        int? Special(string field)
        {
            if (!config.RootElement.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null) return null;
            string? text = value.ValueKind == JsonValueKind.String ? value.GetString()
                : value.ValueKind == JsonValueKind.Object && value.TryGetProperty("content", out var c) ? c.GetString() : null;
            if (text is null || !ids.TryGetValue(text, out int id)) throw new InvalidDataException($"{configPath}: {field} '{text}' is not a token of tokenizer.json");
            return id;
        }
        int eos = Special("eos_token") ?? throw new InvalidDataException($"{configPath}: eos_token is missing: a synth model needs a token that ends generation");
        return new SynthVocabulary(folder, highest + 1, Special("bos_token") ?? eos, eos);
    }

    private static int Id(JsonElement value, string path, string field) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int id) && id is >= 0 and < (1 << 24)
            ? id : throw new InvalidDataException($"{path}: {field} ids must be integers in 0..{(1 << 24) - 1}");

    public void CopyTo(string directory)
    {
        foreach (var name in Files) File.Copy(Path.Combine(Folder, name), Path.Combine(directory, name), overwrite: true);
    }
}
