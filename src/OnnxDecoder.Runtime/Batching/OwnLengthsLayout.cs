namespace OnnxDecoder.Runtime;

/// <summary>
/// Rows that keep their own lengths (GroupQueryAttention over a shared KV buffer, lengths taken per
/// row from the mask): a row's tokens start at column 0 of its cache row, its mask has ones over its
/// own tokens only, and each step is as wide as the longest row. A prompt is prefilled straight into
/// its batch row (the run binds that row's view), so its keys and values are never copied.
/// <para>
/// Prefix cache: a finished request's KV stays in its row (<see cref="RowPrefixCache"/>) until the
/// row is needed again, least recently used first. A new prompt takes a row whose tokens it extends
/// when there is one; when another row (cached, or a live row's prompt) shares a longer prefix, that
/// prefix is copied from row to row in the cache's own memory (device to device under CUDA). A cached
/// or reserved row under the highest live row rides along in each step with a pad token written just
/// past its tokens, so its cache survives.
/// </para>
/// </summary>
internal sealed class OwnLengthsLayout : RowLayout
{
    private readonly BoundRunStep _prefill;   // batch of one over the reserved row's view
    private readonly RowPrefixCache _rowCache;
    private readonly int _vocab, _pad;
    private int _prefillRow = -1, _prefilled; // the reserved row, and prompt tokens whose KV it holds

    public OwnLengthsLayout(DecoderModel model, int rows, int maxLength) : base(model.CreateKvCache(rows, maxLength), rows)
    {
        _rowCache = new RowPrefixCache(rows);
        _vocab = model.Folder.VocabSize;
        _pad = model.Folder.PadTokenId;
        try
        {
            _prefill = new BoundRunStep(model, rows: 1, maxTokens: maxLength, maxLength);
        }
        catch
        {
            Cache.Dispose();
            throw;
        }
    }

    public override int CachedRows => _rowCache.Count;

    public override int BeginPrefill(BatchedSequence sequence)
    {
        var prompt = sequence.PromptIds;
        int limit = prompt.Length - 1; // at least one prompt token runs, for its logits
        var (best, bestLength) = _rowCache.Longest(prompt, limit, Live);
        bool bestIsCached = best >= 0;
        for (int row = 0; row < Live.Length; row++)
            if (Live[row] is { } other && RowPrefixCache.CommonPrefix(other.PromptIds, prompt, limit) is var shared && shared > bestLength)
                (best, bestLength, bestIsCached) = (row, shared, false); // a live row's prompt positions never move
        int target = _rowCache.Take(prompt, Live, limit, out int held);
        int reused = held;
        if (bestLength > held + 1 && best != target) // a copy for BOS alone (every prompt has it) would cost more than it saves
        {
            Cache.CopySegment(Cache, MaxLength, best, 0, bestLength, MaxLength, target, 0);
            if (bestIsCached) _rowCache.Touch(best);
            reused = bestLength;
        }
        (_prefillRow, _prefilled) = (target, reused);
        return reused;
    }

    public override ReadOnlySpan<float> Prefill(BatchedSequence sequence, int done, int size, CancellationToken cancellationToken)
    {
        int total = done + size;
        var ids = _prefill.Ids(1, size);
        var positions = _prefill.Positions(1, size);
        for (int t = 0; t < size; t++)
        {
            ids[t] = sequence.PromptIds[done + t];
            positions[t] = done + t;
        }
        _prefill.Mask(1, total).Fill(1);
        _prefill.Run(1, size, total, Cache, _prefillRow, done, cancellationToken);
        _prefilled = total;
        return _prefill.Logits[.._vocab];
    }

    public override void EndPrefill(BatchedSequence sequence, bool place, int validTokens)
    {
        if (place) Live[_prefillRow] = sequence;
        else if (validTokens > 0) _rowCache.Keep(_prefillRow, sequence.PromptIds[..validTokens]);
        _prefillRow = -1;
        _prefilled = 0;
    }

    public override void PrepareStep(int rows)
    {
        // The step is as wide as the longest row, riding rows included.
        int width = 0;
        for (int row = 0; row < rows; row++)
            if (Live[row] is { } active) width = Math.Max(width, active.Positions);
            else if (row == _prefillRow) width = Math.Max(width, RideAlongColumn(_prefilled));
            else if (_rowCache.TokensOf(row) is { } cached) width = Math.Max(width, RideAlongColumn(cached.Length));
        Width = width;
    }

    public override void FillRow(int row, Span<long> mask, out long id, out long position)
    {
        int column;
        if (Live[row] is { } sequence)
        {
            id = sequence.State.Generated[^1];
            column = sequence.Positions;
        }
        else if (row == _prefillRow)
        {
            id = _pad; // the next prompt chunk overwrites this column
            column = RideAlongColumn(_prefilled);
        }
        else if (_rowCache.TokensOf(row) is { } cached)
        {
            id = _pad; // just past the cached tokens, so their keys and values stay
            column = RideAlongColumn(cached.Length);
            _rowCache.TruncateTo(row, column); // a full row gives up its last position
        }
        else
        {
            id = _pad; // an empty row: a pad token that attends only to itself
            column = 0;
        }
        position = column;
        mask[..(column + 1)].Fill(1);
        mask[(column + 1)..].Clear();
    }

    /// <summary>The column a riding row's pad token writes: just past its tokens, or over its last position when the row is full.</summary>
    private int RideAlongColumn(int tokens) => Math.Min(tokens, MaxLength - 1);

    /// <summary>With own lengths the row keeps its KV for the prefix cache: the prompt and every token fed
    /// back (the last sampled token never ran).</summary>
    public override void Release(int row, BatchedSequence sequence)
    {
        base.Release(row, sequence);
        var generated = sequence.State.Generated;
        int fed = Math.Min(sequence.DecodedSteps, generated.Count);
        var tokens = new int[sequence.PromptIds.Length + fed];
        sequence.PromptIds.CopyTo(tokens, 0);
        generated.CopyTo(0, tokens, sequence.PromptIds.Length, fed);
        _rowCache.Keep(row, tokens);
    }

    public override void Reset()
    {
        base.Reset();
        _rowCache.Clear();
        _prefillRow = -1;
        _prefilled = 0;
    }

    public override void Dispose()
    {
        _prefill?.Dispose();
        base.Dispose();
    }
}
