using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json's model (BPE: vocabulary, merges, options) and its added_tokens.</summary>
internal sealed class TokenizerJsonModelReader(string path) : TokenizerJsonFields(path)
{
    public BpeModel Model(JsonElement model)
    {
        string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "BPE";
        if (type != "BPE") throw Bad($"model.type '{type}' is not supported (only BPE)");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind != JsonValueKind.Null && !(dropout.TryGetDouble(out double d) && d == 0))
            throw Bad("model.dropout must be null or 0: BPE dropout samples tokenizations and is for training only");
        if (!model.TryGetProperty("vocab", out var vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
            throw Bad("model.vocab must be an object of token -> id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var seenIds = new HashSet<int>();
        foreach (var p in vocabElement.EnumerateObject())
        {
            if (!p.Value.TryGetInt32(out int id) || id < 0 || id >= MaxId) throw Bad($"model.vocab['{p.Name}'] is not a valid id");
            if (!vocab.TryAdd(p.Name, id)) throw Bad($"model.vocab lists '{p.Name}' twice");
            if (!seenIds.Add(id)) throw Bad($"model.vocab gives id {id} to two tokens (one is '{p.Name}')");
        }
        string? prefix = String(model, "continuing_subword_prefix", "model");
        int prefixLength = string.IsNullOrEmpty(prefix) ? 0 : prefix.Length;
        var merges = new Dictionary<long, (int Rank, int Id)>(BpeModel.PairComparer.Instance);
        if (model.TryGetProperty("merges", out var mergesElement) && mergesElement.ValueKind == JsonValueKind.Array)
        {
            int rank = 0;
            foreach (var m in mergesElement.EnumerateArray())
            {
                (string Left, string Right) pair;
                if (m.ValueKind == JsonValueKind.String && m.GetString()!.IndexOf(' ') is int space and > 0)
                {
                    string text = m.GetString()!;
                    pair = (text[..space], text[(space + 1)..]);
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                    pair = (m[0].GetString()!, m[1].GetString()!);
                else throw Bad("model.merges entries must be \"a b\" strings or [a, b] pairs");
                if (!vocab.TryGetValue(pair.Left, out int left)) throw Bad($"model.merges[{rank}]: '{pair.Left}' is not in model.vocab");
                if (!vocab.TryGetValue(pair.Right, out int right)) throw Bad($"model.merges[{rank}]: '{pair.Right}' is not in model.vocab");
                if (prefixLength > pair.Right.Length) throw Bad($"model.merges[{rank}]: '{pair.Right}' is shorter than the continuing_subword_prefix");
                string merged = pair.Left + pair.Right[prefixLength..];
                if (!vocab.TryGetValue(merged, out int mergedId)) throw Bad($"model.merges[{rank}]: the merged token '{merged}' is not in model.vocab");
                // A repeated pair keeps its last rank, as Hugging Face's map does.
                merges[BpeModel.Pair(left, right)] = (rank, mergedId);
                rank++;
            }
        }
        else if (model.TryGetProperty("merges", out var other) && other.ValueKind != JsonValueKind.Null) throw Bad("model.merges must be an array");
        string? unk = String(model, "unk_token", "model");
        if (unk is not null && !vocab.ContainsKey(unk)) throw Bad($"model.unk_token '{unk}' is not in model.vocab");
        return new BpeModel(vocab, merges, unk, Bool(model, "fuse_unk", "model", false), Bool(model, "byte_fallback", "model", false),
            Bool(model, "ignore_merges", "model", false), prefix, String(model, "end_of_word_suffix", "model"));
    }

    public List<AddedToken> AddedTokens(JsonElement? element, BpeModel model)
    {
        var tokens = new List<AddedToken>();
        if (element is null) return tokens;
        if (element.Value.ValueKind != JsonValueKind.Array) throw Bad("added_tokens must be an array");
        int index = 0;
        foreach (var token in element.Value.EnumerateArray())
        {
            string field = $"added_tokens[{index++}]";
            if (token.ValueKind != JsonValueKind.Object || !token.TryGetProperty("id", out var idElement)) throw Bad($"{field} must be an object with an id");
            int id = Id(idElement, $"{field}.id");
            string content = String(token, "content", field) ?? throw Bad($"{field}.content must be a string");
            bool special = Bool(token, "special", field, false);
            tokens.Add(new AddedToken(id, content, special, Bool(token, "normalized", field, !special), Bool(token, "lstrip", field, false),
                Bool(token, "rstrip", field, false), Bool(token, "single_word", field, false)));
        }
        return tokens;
    }
}
