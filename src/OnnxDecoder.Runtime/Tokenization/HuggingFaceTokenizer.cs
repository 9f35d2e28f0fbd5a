using System.Text;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// A Hugging Face tokenizer.json pipeline, with its semantics: added tokens split out of the raw
/// text, then per gap the normalizer, added tokens found in normalized text, the pre-tokenizer,
/// the BPE model, and the post-processor when special tokens are asked for. Decoding looks ids up
/// (added tokens first), optionally drops special tokens, and runs the decoder chain. Unknown ids
/// are skipped, as Hugging Face skips them. Thread-safe.
/// </summary>
public sealed class HuggingFaceTokenizer
{
    internal HuggingFaceTokenizer(string path, BpeModel model, AddedVocabulary added, ITextNormalizer? normalizer, IPreTokenizer? preTokenizer,
        IPostProcessor? postProcessor, ITokenDecoder? decoder)
    {
        Path = path;
        Model = model;
        Added = added;
        Normalizer = normalizer;
        PreTokenizer = preTokenizer;
        PostProcessor = postProcessor;
        Decoder = decoder;
    }

    /// <summary>The tokenizer.json this came from.</summary>
    public string Path { get; }
    public BpeModel Model { get; }
    public AddedVocabulary Added { get; }
    public ITextNormalizer? Normalizer { get; }
    public IPreTokenizer? PreTokenizer { get; }
    public IPostProcessor? PostProcessor { get; }
    public ITokenDecoder? Decoder { get; }

    /// <summary>Loads tokenizer.json, and tokenizer_config.json when given (add_bos_token /
    /// add_eos_token for files without a post-processor).</summary>
    public static HuggingFaceTokenizer Load(string tokenizerJsonPath, string? tokenizerConfigPath = null) =>
        TokenizerJsonLoader.Load(tokenizerJsonPath, tokenizerConfigPath);

    public int[] Encode(string text, bool addSpecialTokens)
    {
        text = WithoutLoneSurrogates(text);
        var ids = new List<int>(text.Length / 3 + 4);
        var pieces = new List<TextPiece>();
        foreach (var raw in Added.SplitRaw(text))
        {
            if (raw.TokenId is int rawId)
            {
                ids.Add(rawId);
                continue;
            }
            string normalized = Normalizer?.Normalize(raw.Text) ?? raw.Text;
            foreach (var part in Added.SplitNormalized(normalized))
            {
                if (part.TokenId is int id)
                {
                    ids.Add(id);
                    continue;
                }
                pieces.Clear();
                if (part.Text.Length == 0) continue;
                pieces.Add(new TextPiece(part.Text, raw.Offset == 0 && part.Offset == 0));
                PreTokenizer?.PreTokenize(pieces);
                foreach (var piece in pieces) Model.Tokenize(piece.Text, ids);
            }
        }
        if (addSpecialTokens && PostProcessor is not null) ids = PostProcessor.Process(ids);
        return [.. ids];
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            var added = Added.ById(id);
            if (added is not null)
            {
                if (!(skipSpecialTokens && added.Special)) tokens.Add(Added.DecodedContent(id)!);
                continue;
            }
            string? token = Model.IdToToken(id);
            if (token is null) continue;
            if (skipSpecialTokens && Added.ByContent(token) is { Special: true }) continue;
            tokens.Add(token);
        }
        if (Decoder is null) return string.Join(' ', tokens);
        return string.Concat(Decoder.DecodeChain(tokens));
    }

    /// <summary>The id of an added token or vocabulary entry spelled <paramref name="token"/>.</summary>
    public int? TokenToId(string token) => Added.ByContent(token)?.Id ?? Model.TokenToId(token);

    public string? IdToToken(int id) => Added.ById(id)?.Content ?? Model.IdToToken(id);

    public bool IsSpecial(int id) => Added.ById(id) is { Special: true } || (Model.IdToToken(id) is { } t && Added.ByContent(t) is { Special: true });

    /// <summary>Text reaches the pipeline as UTF-8 would carry it: a lone surrogate is U+FFFD.</summary>
    private static string WithoutLoneSurrogates(string text)
    {
        if (!text.AsSpan().ContainsAnyInRange('\uD800', '\uDFFF')) return text;
        var builder = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes()) builder.Append(rune.ToString());
        return builder.ToString();
    }
}
