using System.Text.Json.Nodes;

namespace OnnxDecoder.Exporters.Tokenizers;

/// <summary>
/// Writes a Hugging Face tokenizer.json (+ tokenizer_config.json, with the source's chat templates
/// when it has any) for a SentencePiece-style BPE vocabulary, so onnxruntime-genai (which reads only tokenizer.json) can tokenize our exports.
/// Spaces become U+2581 with a prepended one, unknown bytes fall back to &lt;0xNN&gt; tokens, and the
/// merges are every split of a piece into two pieces of the vocabulary, ordered by the merged
/// piece's score (highest first): the order in which SentencePiece BPE applies them.
/// </summary>
public static class TokenizerJsonWriter
{
    private const char Space = '\u2581';

    public static void WriteSentencePieceBpe(string directory, IReadOnlyList<(string Piece, float Score, SentencePieceModelWriter.PieceType Type)> pieces,
        int unkId, int bosId, int eosId, int contextLength, IReadOnlyList<(string Name, string Template)>? chatTemplates = null)
    {
        var vocab = new JsonObject();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < pieces.Count; id++)
        {
            string piece = pieces[id].Piece.Replace(' ', Space);
            if (ids.TryAdd(piece, id)) vocab[piece] = id;
        }

        var merges = new List<(float Score, int Id, string Merge)>();
        for (int id = 0; id < pieces.Count; id++)
        {
            var (raw, score, type) = pieces[id];
            if (type != SentencePieceModelWriter.PieceType.Normal) continue;
            string piece = raw.Replace(' ', Space);
            for (int split = 1; split < piece.Length; split++)
            {
                if (char.IsLowSurrogate(piece[split])) continue;
                string left = piece[..split], right = piece[split..];
                if (ids.ContainsKey(left) && ids.ContainsKey(right)) merges.Add((score, id, $"{left} {right}"));
            }
        }
        merges.Sort((a, b) => b.Score != a.Score ? b.Score.CompareTo(a.Score) : a.Id.CompareTo(b.Id));

        var special = new JsonArray();
        foreach (int id in new[] { unkId, bosId, eosId }.Distinct())
            special.Add(new JsonObject
            {
                ["id"] = id, ["content"] = pieces[id].Piece, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        string bos = pieces[bosId].Piece;
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = special,
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = Space.ToString() },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = Space.ToString() }),
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["pair"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
                ["special_tokens"] = new JsonObject { [bos] = new JsonObject { ["id"] = bos, ["ids"] = new JsonArray(bosId), ["tokens"] = new JsonArray(bos) } },
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = Space.ToString() }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = pieces[unkId].Piece, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)m.Merge).ToArray()),
            },
        };
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), tokenizer.ToJsonString());
        var config = new JsonObject
        {
            ["tokenizer_class"] = "LlamaTokenizer", ["add_bos_token"] = true, ["add_eos_token"] = false, ["bos_token"] = bos,
            ["eos_token"] = pieces[eosId].Piece, ["unk_token"] = pieces[unkId].Piece, ["model_max_length"] = contextLength, ["legacy"] = true,
        };
        // transformers' forms: one template is a string; several are a list of {name, template} ("default" among them).
        if (chatTemplates is [var only] && only.Name == "default") config["chat_template"] = only.Template;
        else if (chatTemplates is { Count: > 0 })
            config["chat_template"] = new JsonArray(chatTemplates.Select(t => (JsonNode)new JsonObject { ["name"] = t.Name, ["template"] = t.Template }).ToArray());
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), config.ToJsonString());
    }
}
