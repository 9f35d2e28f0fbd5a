using System.Text;
using Microsoft.ML.Tokenizers;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// llama2.c's encoder, written from the algorithm in ../shared/models/README.md: a dummy-prefix space,
/// one piece per UTF-8 character where the vocabulary has it and byte tokens (&lt;0xNN&gt; = id 3 +
/// byte) otherwise, then repeatedly merge the adjacent pair whose concatenation is the
/// highest-scoring piece. An independent judge for the converted tokenizer on strings of our own.
/// </summary>
internal sealed class Llama2cReferenceEncoder
{
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly float[] _scores;

    public Llama2cReferenceEncoder(string tokenizerPath)
    {
        var bytes = File.ReadAllBytes(tokenizerPath);
        int offset = 4;
        _scores = new float[512];
        for (int id = 0; id < 512; id++)
        {
            _scores[id] = BitConverter.ToSingle(bytes, offset);
            int length = BitConverter.ToInt32(bytes, offset + 4);
            string piece = Encoding.Latin1.GetString(bytes, offset + 8, length); // bytes as chars 0..255
            _ids.TryAdd(piece, id);
            offset += 8 + length;
        }
    }

    public List<int> Encode(string text)
    {
        var tokens = new List<int> { 1 };
        if (text.Length == 0) return tokens;
        var symbols = new List<int>();
        var utf8 = Encoding.UTF8.GetBytes(" " + text);
        for (int i = 0; i < utf8.Length;)
        {
            int length = (utf8[i] & 0x80) == 0 ? 1 : (utf8[i] & 0xE0) == 0xC0 ? 2 : (utf8[i] & 0xF0) == 0xE0 ? 3 : 4;
            string piece = Encoding.Latin1.GetString(utf8, i, length);
            if (_ids.TryGetValue(piece, out int id)) symbols.Add(id);
            else for (int b = 0; b < length; b++) symbols.Add(utf8[i + b] + 3);
            i += length;
        }
        var pieces = symbols.Select(PieceOf).ToList();
        while (true)
        {
            int best = -1, bestId = -1;
            float bestScore = float.NegativeInfinity;
            for (int i = 0; i < symbols.Count - 1; i++)
                if (_ids.TryGetValue(pieces[i] + pieces[i + 1], out int merged) && _scores[merged] > bestScore)
                    (best, bestId, bestScore) = (i, merged, _scores[merged]);
            if (best < 0) break;
            symbols[best] = bestId;
            pieces[best] += pieces[best + 1];
            symbols.RemoveAt(best + 1);
            pieces.RemoveAt(best + 1);
        }
        tokens.AddRange(symbols);
        return tokens;
    }

    private string PieceOf(int id) => id is >= 3 and < 259 ? ((char)(id - 3)).ToString() : _ids.First(kv => kv.Value == id).Key;
}

public class TokenizerTests
{
    private static TextTokenizer Stories() => TextTokenizer.Load(Fixtures.Stories(Lowering.Portable), bosTokenId: 1);

    private static readonly string[] OwnStrings =
    [
        "Hello, world!", "Once upon a time, in a land far away...", "a", " ", "   three leading spaces", "trailing spaces   ",
        "tabs\tand\nnewlines\r\n", "punctuation: ;:!?.,'\"()[]{}<>@#$%^&*-_=+/\\|~`", "numbers 0123456789 3.14159 -42",
        "UPPER lower MiXeD", "don't won't can't it's", "naïve café résumé", "Ünïcödé ÀÉÎÕÜ", "日本語のテキスト", "Привет, мир",
        "emoji 😀🎉👍🏽", "math ∑∫√∞≠≈", "mixed 中文 and English", "a  b   c    d", "The end.",
    ];

    [Test]
    public void Converted_tok512_matches_a_plain_llama2c_encoder_on_strings_of_our_own()
    {
        var reference = new Llama2cReferenceEncoder(Stories260K.Tokenizer);
        foreach (var (text, ids) in Stories260K.Encodings())
            Assert.That(reference.Encode(text), Is.EqualTo(ids), $"the reference itself reproduces llama2.c on \"{text}\"");
        var tokenizer = Stories();
        foreach (var text in OwnStrings)
            Assert.That(tokenizer.Encode(text, addBos: true), Is.EqualTo(reference.Encode(text)), $"text: \"{text}\"");
    }

    [Test]
    public void Emoji_and_rare_characters_fall_back_to_byte_tokens()
    {
        var ids = Stories().Encode("😀", addBos: false);
        // " " then the four UTF-8 bytes F0 9F 98 80 as <0xNN> tokens (id = byte + 3).
        Assert.That(ids.Skip(ids.Length - 4), Is.EqualTo(new[] { 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3 }));
    }

    [Test]
    public void Decode_of_encode_gives_the_text_back()
    {
        var tokenizer = Stories();
        foreach (var text in OwnStrings.Concat(Stories260K.Encodings().Select(c => c.Text)).Where(t => t.Length > 0 && !t.Contains("<s>") && !t.Contains("</s>") && !t.Contains("<unk>")))
            Assert.That(tokenizer.Decode(tokenizer.Encode(text, addBos: true)), Is.EqualTo(text), $"text: \"{text}\"");
    }

    [Test]
    public void Gpt2_vocab_and_merges_equal_the_tiktoken_gpt2_encoding()
    {
        string folder = Path.Combine(Fixtures.Root, "gpt2-tokenizer");
        Directory.CreateDirectory(folder);
        File.Copy(TestPaths.SharedFile("models", "tokenizers", "gpt2", "encoder.json"), Path.Combine(folder, "vocab.json"), overwrite: true);
        File.Copy(TestPaths.SharedFile("models", "tokenizers", "gpt2", "vocab.bpe"), Path.Combine(folder, "merges.txt"), overwrite: true);
        var ours = TextTokenizer.Load(folder, bosTokenId: null);
        var tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        Assert.That(ours.Kind, Is.EqualTo("bpe"));
        foreach (var text in OwnStrings.Concat(["It's 2026: GPT-2's BPE, byte-level.", "  leading", "x\n\ny", "🇫🇷 flags", "ünïcödé"]))
        {
            Assert.That(ours.Encode(text, addBos: false), Is.EqualTo(tiktoken.EncodeToIds(text).ToArray()), $"text: \"{text}\"");
            Assert.That(ours.Decode(ours.Encode(text, addBos: false)), Is.EqualTo(text));
        }
    }

    [Test]
    public void Streaming_detokenizer_never_splits_a_character()
    {
        var tokenizer = Stories();
        const string text = "Ünïcödé 😀 and 日本";
        var ids = tokenizer.Encode(text, addBos: true);
        var streamer = new IncrementalDetokenizer(tokenizer, [ids[0]]);
        var pieces = ids.Skip(1).Select(streamer.Add).ToList();
        pieces.Add(streamer.Flush());
        Assert.That(string.Concat(pieces).TrimStart(), Is.EqualTo(text));
        Assert.That(pieces, Has.None.Contains("\uFFFD"), "no piece ends inside a multi-byte character");
        Assert.That(pieces.Count(p => p.Length == 0), Is.GreaterThan(0), "byte tokens of one character were held back until complete");
    }
}
