using System.Text;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>One entry of tokenizer.json's "added_tokens" (with the id it gets on load).</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool Normalized, bool LeftStrip, bool RightStrip, bool SingleWord);

/// <summary>
/// Added tokens, split out of the text before the model sees it, as Hugging Face's AddedVocabulary
/// does: tokens with normalized=false are found in the raw text, the others (their content
/// normalized too) in each normalized gap. Matching is leftmost-longest; single_word needs no word
/// character on either side; lstrip / rstrip take the whitespace beside the token with it.
/// </summary>
public sealed class AddedVocabulary
{
    private readonly Dictionary<int, AddedToken> _byId = [];
    private readonly Dictionary<string, AddedToken> _byContent = new(StringComparer.Ordinal);
    private readonly Trie _raw = new(), _normalized = new();

    /// <summary>Adds the tokens in file order, with ids as Hugging Face assigns them on load (the
    /// file's ids are not authoritative): a content the model vocabulary has keeps its vocabulary
    /// id, a new one gets the next id after the vocabulary and the tokens added so far. A repeated
    /// content is added once.</summary>
    public AddedVocabulary(IEnumerable<AddedToken> tokens, BpeModel model, ITextNormalizer? normalizer)
    {
        int vocabularySize = model.VocabularyCount;
        int? maxAdded = null;
        foreach (var token in tokens)
        {
            if (token.Content.Length == 0 || _byContent.ContainsKey(token.Content)) continue;
            int id = model.TokenToId(token.Content)
                ?? (maxAdded is int max ? (max >= vocabularySize || vocabularySize == 0 ? checked(max + 1) : vocabularySize) : vocabularySize);
            var placed = token with { Id = id };
            _byContent[token.Content] = placed;
            _byId[id] = placed;
            maxAdded = Math.Max(maxAdded ?? id, id);
        }
        foreach (var token in _byContent.Values)
        {
            string pattern = token.Normalized ? normalizer?.Normalize(token.Content) ?? token.Content : token.Content;
            (token.Normalized ? _normalized : _raw).Add(pattern, token);
            _decodedById[token.Id] = pattern;
        }
    }

    private readonly Dictionary<int, string> _decodedById = [];

    /// <summary>The token string decoding starts from: a normalized token's normalized content, as
    /// Hugging Face stores it.</summary>
    public string? DecodedContent(int id) => _decodedById.GetValueOrDefault(id);

    public IReadOnlyCollection<AddedToken> Tokens => _byId.Values;

    public AddedToken? ById(int id) => _byId.GetValueOrDefault(id);

    public AddedToken? ByContent(string content) => _byContent.GetValueOrDefault(content);

    /// <summary>A segment of the text: an added token's id, or text for the normalizer / model.</summary>
    public readonly record struct Segment(int? TokenId, string Text, int Offset);

    /// <summary>Splits raw text on the tokens that are matched before normalization.</summary>
    public List<Segment> SplitRaw(string text) => Split(text, _raw);

    /// <summary>Splits a normalized gap on the tokens that are matched after normalization.</summary>
    public List<Segment> SplitNormalized(string text) => Split(text, _normalized);

    private static List<Segment> Split(string text, Trie trie)
    {
        var segments = new List<Segment>();
        if (trie.IsEmpty || text.Length == 0)
        {
            segments.Add(new Segment(null, text, 0));
            return segments;
        }
        int emitted = 0;
        for (int i = 0; i < text.Length;)
        {
            var (token, length) = trie.LongestAt(text, i);
            if (token is null)
            {
                i++;
                continue;
            }
            int start = i, stop = i + length;
            i = stop; // matches never overlap, whatever is done with them
            if (token.SingleWord && ((start > 0 && IsWordCharBefore(text, start)) || (stop < text.Length && IsWordCharAt(text, stop)))) continue;
            if (token.LeftStrip)
            {
                int s = start;
                while (s > 0 && char.IsWhiteSpace(text[s - 1])) s--;
                start = Math.Max(s, emitted);
            }
            if (token.RightStrip)
                while (stop < text.Length && char.IsWhiteSpace(text[stop])) stop++;
            if (emitted < start) segments.Add(new Segment(null, text[emitted..start], emitted));
            segments.Add(new Segment(token.Id, token.Content, start));
            emitted = stop;
            i = Math.Max(i, stop);
        }
        if (emitted < text.Length || segments.Count == 0) segments.Add(new Segment(null, text[emitted..], emitted));
        return segments;
    }

    private static bool IsWordChar(Rune rune) => Rune.IsLetterOrDigit(rune) || rune.Value == '_';

    private static bool IsWordCharBefore(string text, int index) =>
        Rune.DecodeLastFromUtf16(text.AsSpan(0, index), out var rune, out _) == System.Buffers.OperationStatus.Done && IsWordChar(rune);

    private static bool IsWordCharAt(string text, int index) =>
        Rune.DecodeFromUtf16(text.AsSpan(index), out var rune, out _) == System.Buffers.OperationStatus.Done && IsWordChar(rune);

    /// <summary>A character trie over token contents.</summary>
    private sealed class Trie
    {
        private sealed class Node
        {
            public Dictionary<char, Node>? Children;
            public AddedToken? Token;
        }

        private readonly Node _root = new();

        public bool IsEmpty => _root.Children is null;

        public void Add(string content, AddedToken token)
        {
            if (content.Length == 0) return;
            var node = _root;
            foreach (char c in content)
            {
                node.Children ??= [];
                if (!node.Children.TryGetValue(c, out var child)) node.Children[c] = child = new Node();
                node = child;
            }
            node.Token ??= token;
        }

        public (AddedToken? Token, int Length) LongestAt(string text, int start)
        {
            var node = _root;
            AddedToken? best = null;
            int bestLength = 0;
            for (int i = start; i < text.Length; i++)
            {
                if (node.Children is null || !node.Children.TryGetValue(text[i], out node)) break;
                if (node.Token is not null) (best, bestLength) = (node.Token, i + 1 - start);
            }
            return (best, bestLength);
        }
    }
}
