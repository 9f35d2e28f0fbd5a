namespace OnnxDecoder.Runtime;

/// <summary>
/// Which tokens each free row of a batch KV cache still holds keys and values for, after the sequence
/// that decoded there finished (the prefix cache of <see cref="ContinuousBatcher"/>), and which row a new
/// request takes: one its prompt extends, else an empty one, else the least recently used. Holds no KV
/// itself; <see cref="OwnLengthsLayout"/> owns the memory and tells this type what it wrote.
/// </summary>
internal sealed class RowPrefixCache(int rows)
{
    private readonly int[]?[] _tokens = new int[]?[rows]; // null: the row caches nothing
    private readonly bool[] _longKeys = new bool[rows];  // the row's keys were rotated with LongRoPE's long factors
    private readonly long[] _used = new long[rows];      // when each row was last finished or hit
    private long _clock;

    /// <summary>The tokens a free row holds KV for, or null.</summary>
    public int[]? TokensOf(int row) => _tokens[row];

    public int Count
    {
        get
        {
            int cached = 0;
            foreach (var tokens in _tokens) if (tokens is not null) cached++;
            return cached;
        }
    }

    /// <summary>The free row sharing the longest prefix with <paramref name="prompt"/>, up to
    /// <paramref name="limit"/> tokens, among rows whose keys were rotated with the factors the prompt's run uses
    /// (<paramref name="longKeys"/>: LongRoPE's long ones); (-1, 0) when none shares any. Only a hit the caller uses should
    /// count as a use (<see cref="Touch"/>): every row shares BOS.</summary>
    public (int Row, int Length) Longest(int[] prompt, int limit, BatchedSequence?[] live, bool longKeys)
    {
        int best = -1, length = 0;
        for (int row = 0; row < _tokens.Length; row++)
            if (live[row] is null && _tokens[row] is { } cached && _longKeys[row] == longKeys && CommonPrefix(cached, prompt, limit) is var shared && shared > length)
                (best, length) = (row, shared);
        return (best, length);
    }

    /// <summary>A request started from this row's cache: it is the last to be evicted.</summary>
    public void Touch(int row) => _used[row] = ++_clock;

    /// <summary>The free row a new request decodes in, its cache forgotten: a row whose tokens the prompt
    /// extends (nothing is lost), else one that caches nothing, else the least recently used.
    /// <paramref name="held"/>: how many of the prompt's first tokens (up to <paramref name="limit"/>) the
    /// row's KV already holds rotated as the prompt's run rotates (<paramref name="longKeys"/>), else 0.</summary>
    public int Take(int[] prompt, BatchedSequence?[] live, int limit, bool longKeys, out int held)
    {
        int chosen = -1;
        for (int row = 0; row < _tokens.Length && chosen < 0; row++)
            if (live[row] is null && _tokens[row] is { } cached && cached.Length <= prompt.Length && CommonPrefix(cached, prompt, cached.Length) == cached.Length)
                chosen = row;
        for (int row = 0; row < _tokens.Length && chosen < 0; row++)
            if (live[row] is null && _tokens[row] is null) chosen = row;
        if (chosen < 0)
            for (int row = 0; row < _tokens.Length; row++)
                if (live[row] is null && (chosen < 0 || _used[row] < _used[chosen])) chosen = row;
        if (chosen < 0) throw new InvalidOperationException("no free row to take: admit a request only while a row is free");
        held = _tokens[chosen] is { } kept && _longKeys[chosen] == longKeys ? CommonPrefix(kept, prompt, limit) : 0;
        _tokens[chosen] = null;
        return chosen;
    }

    /// <summary>A sequence left <paramref name="row"/>, whose KV now holds <paramref name="tokens"/> (keys rotated with
    /// LongRoPE's long factors when <paramref name="longKeys"/>).</summary>
    public void Keep(int row, int[] tokens, bool longKeys)
    {
        _tokens[row] = tokens;
        _longKeys[row] = longKeys;
        _used[row] = ++_clock;
    }

    /// <summary>The row's KV past <paramref name="length"/> positions was overwritten.</summary>
    public void TruncateTo(int row, int length)
    {
        if (_tokens[row] is { } cached && length < cached.Length) _tokens[row] = cached[..length];
    }

    /// <summary>Every row's KV is undefined (a failed run).</summary>
    public void Clear() => Array.Clear(_tokens);

    public static int CommonPrefix(IReadOnlyList<int> cached, int[] prompt, int limit)
    {
        limit = Math.Min(Math.Min(limit, cached.Count), prompt.Length);
        int common = 0;
        while (common < limit && cached[common] == prompt[common]) common++;
        return common;
    }
}
