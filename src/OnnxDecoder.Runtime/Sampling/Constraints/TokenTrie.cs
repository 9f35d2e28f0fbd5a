using System.Runtime.CompilerServices;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// Every text token's bytes, as a trie: a node per distinct byte prefix, the tokens that end there,
/// and children stored contiguously (breadth-first), so a mask step walks the trie beside the
/// grammar and drops a whole subtree when the grammar refuses its prefix. Built once per tokenizer.
/// </summary>
public sealed class TokenTrie
{
    private static readonly ConditionalWeakTable<TextTokenizer, TokenTrie> PerTokenizer = new();

    /// <summary>Per token id, its bytes (null: special or empty tokens, never allowed by a grammar).</summary>
    public byte[]?[] TokenBytes { get; }
    /// <summary>Bytes that some token consists of alone: the closing paths a grammar may rely on.</summary>
    public ByteSet SingleByteTokens { get; }

    // Per node (0 is the root): the byte that leads to it, its children's range, and its tokens' range.
    internal byte[] EdgeByte { get; }
    internal int[] FirstChild { get; }
    internal int[] ChildCount { get; }
    internal int[] FirstToken { get; }
    internal int[] TokenCount { get; }
    internal int[] TokenIds { get; }
    public int NodeCount => EdgeByte.Length;

    /// <summary>The trie of <paramref name="tokenizer"/>'s vocabulary, built on first use and kept while the tokenizer lives.
    /// Ids at or past the model's vocabulary size are left out: the model cannot produce them, so no closing path may rely on them.</summary>
    public static TokenTrie For(TextTokenizer tokenizer, int modelVocabSize) =>
        PerTokenizer.GetValue(tokenizer, t => new TokenTrie(t.ForVocabulary(modelVocabSize).Take(modelVocabSize).ToArray()));

    public TokenTrie(byte[]?[] tokenBytes)
    {
        TokenBytes = tokenBytes;
        var root = new Building();
        var single = ByteSet.Empty;
        for (int id = 0; id < tokenBytes.Length; id++)
        {
            var bytes = tokenBytes[id];
            if (bytes is null || bytes.Length == 0) continue;
            if (bytes.Length == 1) single = single.Union(ByteSet.Of(bytes[0]));
            var node = root;
            foreach (var b in bytes)
            {
                node.Children ??= new SortedDictionary<byte, Building>();
                if (!node.Children.TryGetValue(b, out var child)) node.Children[b] = child = new Building { Byte = b };
                node = child;
            }
            node.Tokens.Add(id);
        }
        SingleByteTokens = single;

        var order = new List<Building> { root };
        for (int i = 0; i < order.Count; i++)
            if (order[i].Children is { } children) order.AddRange(children.Values);
        int count = order.Count;
        EdgeByte = new byte[count];
        FirstChild = new int[count];
        ChildCount = new int[count];
        FirstToken = new int[count];
        TokenCount = new int[count];
        var ids = new List<int>();
        int next = 1;
        for (int i = 0; i < count; i++)
        {
            var node = order[i];
            EdgeByte[i] = node.Byte;
            FirstChild[i] = next;
            ChildCount[i] = node.Children?.Count ?? 0;
            next += ChildCount[i];
            FirstToken[i] = ids.Count;
            TokenCount[i] = node.Tokens.Count;
            ids.AddRange(node.Tokens);
        }
        TokenIds = [.. ids];
    }

    private sealed class Building
    {
        public byte Byte;
        public SortedDictionary<byte, Building>? Children;
        public readonly List<int> Tokens = [];
    }
}
