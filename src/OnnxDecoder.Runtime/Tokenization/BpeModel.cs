using System.Collections.Concurrent;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// Hugging Face's BPE model, hand-written (Microsoft.ML.Tokenizers' BpeTokenizer has no
/// byte_fallback or ignore_merges): a word starts as one symbol per character (with the
/// continuing-subword prefix / end-of-word suffix where configured); a character missing from the
/// vocabulary becomes its &lt;0xNN&gt; byte tokens (byte_fallback) or the unknown token (fused when
/// fuse_unk), or is dropped when there is none. Then the adjacent pair with the lowest merge rank
/// (leftmost on ties) merges until none is left, through a linked list and a priority queue.
/// Words are cached (bounded; the cache is emptied when full).
/// </summary>
public sealed class BpeModel
{
    private const int MaxCachedWordLength = 256;
    private const int CacheCapacity = 100_000;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    // (left id << 32 | right id) -> (rank, merged id).
    private readonly Dictionary<long, (int Rank, int Id)> _merges;
    private readonly string?[] _tokens;
    private readonly int[] _byteIds; // <0xNN> ids, -1 where absent
    private readonly int? _unkId;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    public BpeModel(Dictionary<string, int> vocab, Dictionary<long, (int Rank, int Id)> merges, string? unkToken, bool fuseUnk, bool byteFallback,
        bool ignoreMerges, string? continuingSubwordPrefix, string? endOfWordSuffix)
    {
        _vocab = vocab;
        _vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _merges = merges;
        int size = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        _tokens = new string?[size];
        foreach (var (token, id) in vocab) _tokens[id] = token;
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++) _byteIds[b] = byteFallback && vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        ByteFallback = byteFallback;
        _unkId = unkToken is not null && vocab.TryGetValue(unkToken, out int unk) ? unk : null;
        UnknownToken = unkToken;
        FuseUnknown = fuseUnk;
        IgnoreMerges = ignoreMerges;
        ContinuingSubwordPrefix = string.IsNullOrEmpty(continuingSubwordPrefix) ? null : continuingSubwordPrefix;
        EndOfWordSuffix = string.IsNullOrEmpty(endOfWordSuffix) ? null : endOfWordSuffix;
    }

    public bool ByteFallback { get; }
    public string? UnknownToken { get; }
    public bool FuseUnknown { get; }
    public bool IgnoreMerges { get; }
    public string? ContinuingSubwordPrefix { get; }
    public string? EndOfWordSuffix { get; }

    /// <summary>Entries in the vocabulary.</summary>
    public int VocabularyCount => _vocab.Count;

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)_tokens.Length ? _tokens[id] : null;

    /// <summary>A &lt;0xNN&gt; byte-fallback token.</summary>
    public bool IsByteToken(int id) => ByteFallback && IdToToken(id) is { Length: 6 } t && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>';

    /// <summary>Appends the ids of one pre-tokenized word.</summary>
    public void Tokenize(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (IgnoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        if (_cache.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        var ids = Merge(word);
        if (word.Length < MaxCachedWordLength)
        {
            if (_cache.Count >= CacheCapacity) _cache.Clear();
            _cache.TryAdd(word, ids);
        }
        output.AddRange(ids);
    }

    private int[] Merge(string word)
    {
        var symbols = new List<int>(word.Length);
        int? pendingUnk = null;
        for (int i = 0; i < word.Length;)
        {
            int length = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            bool first = i == 0, last = i + length == word.Length;
            var character = word.AsSpan(i, length);
            int? id;
            if (ContinuingSubwordPrefix is null && EndOfWordSuffix is null) id = _vocabBySpan.TryGetValue(character, out int v) ? v : null;
            else
            {
                string piece = (first ? "" : ContinuingSubwordPrefix ?? "") + character.ToString() + (last ? EndOfWordSuffix ?? "" : "");
                id = _vocab.TryGetValue(piece, out int v) ? v : null;
            }
            i += length;
            if (id is int found)
            {
                if (pendingUnk is int u) symbols.Add(u);
                pendingUnk = null;
                symbols.Add(found);
                continue;
            }
            if (ByteFallback && TryBytes(character, symbols)) continue;
            if (_unkId is int unk)
            {
                // Consecutive unknown characters fuse into one unknown token when fuse_unk.
                if (pendingUnk is not null && !FuseUnknown) symbols.Add(pendingUnk.Value);
                pendingUnk = unk;
            }
        }
        if (pendingUnk is int tail) symbols.Add(tail);
        return MergeAll(symbols);
    }

    private bool TryBytes(ReadOnlySpan<char> character, List<int> symbols)
    {
        Span<byte> bytes = stackalloc byte[4];
        int count = Encoding.UTF8.GetBytes(character, bytes);
        for (int b = 0; b < count; b++)
            if (_byteIds[bytes[b]] < 0) return false;
        for (int b = 0; b < count; b++) symbols.Add(_byteIds[bytes[b]]);
        return true;
    }

    private int[] MergeAll(List<int> symbols)
    {
        int n = symbols.Count;
        if (n < 2 || _merges.Count == 0) return [.. symbols];
        var ids = symbols.ToArray();
        var previous = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            previous[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        // Priority (rank, position): lowest rank first, leftmost on ties.
        var queue = new PriorityQueue<(int Position, int NewId), long>(n);
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(Pair(ids[i], ids[i + 1]), out var m)) queue.Enqueue((i, m.Id), Priority(m.Rank, i));
        while (queue.TryDequeue(out var top, out _))
        {
            int position = top.Position;
            if (!alive[position] || next[position] < 0) continue;
            int right = next[position];
            // A stale entry: the pair changed since it was queued.
            if (!_merges.TryGetValue(Pair(ids[position], ids[right]), out var current) || current.Id != top.NewId) continue;
            ids[position] = top.NewId;
            alive[right] = false;
            next[position] = next[right];
            if (next[right] >= 0) previous[next[right]] = position;
            if (previous[position] >= 0 && _merges.TryGetValue(Pair(ids[previous[position]], ids[position]), out var before))
                queue.Enqueue((previous[position], before.Id), Priority(before.Rank, previous[position]));
            if (next[position] >= 0 && _merges.TryGetValue(Pair(ids[position], ids[next[position]]), out var after))
                queue.Enqueue((position, after.Id), Priority(after.Rank, position));
        }
        var result = new List<int>(n);
        for (int i = 0; i >= 0 && i < n; i = next[i]) result.Add(ids[i]);
        return [.. result];
    }

    internal static long Pair(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>long's own hash is left ^ right, which collides for most pairs of small ids.</summary>
    internal sealed class PairComparer : IEqualityComparer<long>
    {
        public static readonly PairComparer Instance = new();

        public bool Equals(long x, long y) => x == y;

        public int GetHashCode(long pair) => (int)((ulong)(pair * unchecked((long)0x9E3779B97F4A7C15)) >> 32);
    }

    private static long Priority(int rank, int position) => ((long)rank << 32) | (uint)position;
}
