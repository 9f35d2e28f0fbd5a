using System.Text;
using Microsoft.ML.Tokenizers;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// The bytes each token stands for, as the text decoder emits them: byte-level BPE's vocabulary
/// strings mapped back through GPT-2's byte-to-character table; SentencePiece pieces with ▁ as a
/// space and &lt;0xNN&gt; byte-fallback tokens as one byte; tiktoken's tokens decoded one by one. Special and
/// control tokens (BOS, EOS, unknown, added tokens) have no bytes (null): a grammar never allows them.
/// </summary>
public static class TokenBytes
{
    /// <summary>Per token id (up to the vocabulary's largest id; for tiktoken, below <paramref name="modelVocabSize"/>), its bytes, or null for special tokens.</summary>
    public static byte[]?[] ForVocabulary(this TextTokenizer tokenizer, int modelVocabSize)
    {
        if (tokenizer.Pipeline is { } pipeline) return FromPipeline(pipeline);
        return tokenizer.Inner switch
        {
            SentencePieceTokenizer sp => FromPieces(sp.Vocabulary, Specials(sp.SpecialTokens, sp.BeginningOfSentenceId, sp.EndOfSentenceId, sp.UnknownId), byteLevel: false),
            BpeTokenizer bpe => FromPieces(bpe.Vocabulary, Specials(bpe.SpecialTokens), byteLevel: !LooksLikeSentencePiece(bpe.Vocabulary)),
            TiktokenTokenizer tiktoken => FromRanks(tiktoken, modelVocabSize),
            var other => throw new NotSupportedException($"token bytes are not known for {other?.GetType().Name ?? "a tokenizer without a vocabulary"}: constrained decoding needs a SentencePiece, BPE or tiktoken vocabulary"),
        };
    }

    /// <summary>tokenizer.json: model pieces as byte-level or SentencePiece text; non-special added tokens are their
    /// decoded text, special ones have no bytes.</summary>
    private static byte[]?[] FromPipeline(HuggingFaceTokenizer pipeline)
    {
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < pipeline.Model.VocabularyCount; id++)
            if (pipeline.Model.IdToToken(id) is { } piece && pipeline.Added.ById(id) is null) vocabulary[piece] = id;
        var specials = pipeline.Added.Tokens.Where(t => t.Special).Select(t => t.Id).ToHashSet();
        var bytes = FromPieces(vocabulary, specials, byteLevel: !LooksLikeSentencePiece(vocabulary));
        int size = Math.Max(bytes.Length, pipeline.Added.Tokens.Count == 0 ? 0 : pipeline.Added.Tokens.Max(t => t.Id) + 1);
        if (size > bytes.Length) Array.Resize(ref bytes, size);
        foreach (var added in pipeline.Added.Tokens)
            bytes[added.Id] = added.Special ? null : Encoding.UTF8.GetBytes(pipeline.Added.DecodedContent(added.Id) ?? added.Content);
        return bytes;
    }

    private static HashSet<int> Specials(IReadOnlyDictionary<string, int>? special, params int[] ids)
    {
        var set = new HashSet<int>(ids.Where(id => id >= 0));
        if (special is not null) set.UnionWith(special.Values);
        return set;
    }

    // Byte-fallback tokens or ▁-marked pieces: a SentencePiece vocabulary stored as BPE (tokenizer.json with Metaspace).
    private static bool LooksLikeSentencePiece(IReadOnlyDictionary<string, int> vocabulary) =>
        vocabulary.ContainsKey("<0x00>") || vocabulary.Keys.Take(4096).Count(k => k.Contains('\u2581')) > 16;

    private static byte[]?[] FromPieces(IReadOnlyDictionary<string, int> vocabulary, HashSet<int> specials, bool byteLevel)
    {
        int size = vocabulary.Count == 0 ? 0 : vocabulary.Values.Max() + 1;
        foreach (var id in specials) size = Math.Max(size, id + 1);
        var bytes = new byte[]?[size];
        var unicodeToByte = byteLevel ? UnicodeToByte() : null;
        foreach (var (piece, id) in vocabulary)
        {
            if (specials.Contains(id) || id < 0) continue;
            bytes[id] = byteLevel ? FromByteLevel(piece, unicodeToByte!) : FromSentencePiece(piece);
        }
        return bytes;
    }

    private static byte[]? FromSentencePiece(string piece)
    {
        if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece.EndsWith('>')
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte value))
            return [value];
        // Control and user-defined symbols (<s>, <pad>, <|im_start|>...) are not text.
        if (piece.Length > 2 && piece[0] == '<' && piece[^1] == '>') return null;
        return piece.Length == 0 ? null : Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' '));
    }

    private static byte[]? FromByteLevel(string piece, Dictionary<char, byte> unicodeToByte)
    {
        var bytes = new byte[piece.Length];
        for (int i = 0; i < piece.Length; i++)
            if (!unicodeToByte.TryGetValue(piece[i], out bytes[i])) return null; // not a byte-level piece
        return bytes.Length == 0 ? null : bytes;
    }

    // The library keeps tiktoken's byte table internal: tokens are decoded one by one, and those that
    // hold part of a UTF-8 character (they decode to U+FFFD) are left out of the constraint's vocabulary.
    private static byte[]?[] FromRanks(TiktokenTokenizer tiktoken, int size)
    {
        var specials = Specials(tiktoken.SpecialTokens);
        var bytes = new byte[]?[size];
        for (int id = 0; id < size; id++)
        {
            if (specials.Contains(id)) continue;
            string? text;
            try { text = tiktoken.Decode([id]); }
            catch (Exception e) when (e is ArgumentException or KeyNotFoundException) { continue; } // an id the ranks do not have
            if (!string.IsNullOrEmpty(text) && !text.Contains('\uFFFD')) bytes[id] = Encoding.UTF8.GetBytes(text);
        }
        return bytes;
    }

    /// <summary>GPT-2's table: printable bytes stand for themselves, the rest for 256 + n in byte order.</summary>
    private static Dictionary<char, byte> UnicodeToByte()
    {
        var map = new Dictionary<char, byte>();
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[printable ? (char)b : (char)(256 + extra++)] = (byte)b;
        }
        return map;
    }
}
