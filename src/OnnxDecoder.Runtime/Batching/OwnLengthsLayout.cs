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
/// <para>
/// Batched prefill: prompts that start from column 0 are prefilled side by side in one run over
/// consecutive reserved rows, right padded to the longest piece. GroupQueryAttention treats a run
/// whose new tokens fill its whole width (sequence length = total length) as a first prompt: every
/// row's keys start at column 0, each row's seqlens_k (its last real column, from the mask) bounds
/// what it attends, and the padding after a row's tokens is written but never attended (a decode
/// step overwrites it). A run over a past (a chunk after the first, or a cached prefix) must be a
/// batch of one for GroupQueryAttention, so such a prompt runs alone; decode rows cannot share a
/// prefill run for the same reason.
/// </para>
/// </summary>
internal sealed class OwnLengthsLayout : RowLayout
{
    /// <summary>Rows one prefill run may hold (bounds the host arrays of the prefill step: rows x max length).</summary>
    private const int MaxRowsPerPrefill = 16;
    private readonly BoundRunStep _prefill;   // up to MaxRowsPerPrefill consecutive reserved rows of the batch cache
    private readonly RowPrefixCache _rowCache;
    private readonly BatchedSequence?[] _reserved;  // the prompt being prefilled into each row
    private readonly int[] _reservedDone;           // prompt tokens whose KV each reserved row holds
    private readonly BatchedSequence?[] _occupied;  // scratch: live or reserved
    private readonly int[] _pieceTokens;            // [rows of the last prefill run]: real tokens of each row
    private readonly int _vocab, _pad, _prefillRows;
    private readonly bool _fullLogits;

    public OwnLengthsLayout(DecoderModel model, int rows, int maxLength) : base(model.CreateKvCache(rows, maxLength), rows)
    {
        _rowCache = new RowPrefixCache(rows);
        _reserved = new BatchedSequence?[rows];
        _reservedDone = new int[rows];
        _occupied = new BatchedSequence?[rows];
        _vocab = model.Folder.VocabSize;
        _pad = model.Folder.PadTokenId;
        _fullLogits = model.FullLogits;
        _prefillRows = Math.Min(rows, MaxRowsPerPrefill);
        _pieceTokens = new int[_prefillRows];
        try
        {
            _prefill = new BoundRunStep(model, _prefillRows, maxTokens: maxLength, maxLength);
        }
        catch
        {
            Cache.Dispose();
            throw;
        }
    }

    public override int CachedRows => _rowCache.Count;
    public override bool BatchesPrefill => _prefillRows > 1;
    public override bool RowsMayEndApart => _fullLogits;

    public override bool HasFreeRow
    {
        get
        {
            for (int row = 0; row < Live.Length; row++)
                if (Live[row] is null && _reserved[row] is null) return true;
            return false;
        }
    }

    /// <summary>Rows holding a decoding sequence or a prompt being prefilled.</summary>
    private BatchedSequence?[] Occupied()
    {
        for (int row = 0; row < Live.Length; row++) _occupied[row] = Live[row] ?? _reserved[row];
        return _occupied;
    }

    /// <summary>The row sharing the longest prefix with <paramref name="prompt"/>: a free cached row, or a live row's prompt;
    /// <paramref name="longKeys"/>: the prompt's run rotates with LongRoPE's long factors, so only keys rotated so serve it.</summary>
    private (int Row, int Length, bool Cached) BestPrefix(int[] prompt, int limit, bool longKeys)
    {
        var (best, bestLength) = _rowCache.Longest(prompt, limit, Occupied(), longKeys);
        bool bestIsCached = best >= 0;
        for (int row = 0; row < Live.Length; row++)
            if (Live[row] is { } other && other.LongFactorKeys == longKeys
                && RowPrefixCache.CommonPrefix(other.PromptIds, prompt, limit) is var shared && shared > bestLength)
                (best, bestLength, bestIsCached) = (row, shared, false); // a live row's prompt positions never move
        return (best, bestLength, bestIsCached);
    }

    public override int BeginPrefill(BatchedSequence sequence)
    {
        var prompt = sequence.PromptIds;
        int limit = prompt.Length - 1; // at least one prompt token runs, for its logits
        var (best, bestLength, bestIsCached) = BestPrefix(prompt, limit, sequence.LongFactorKeys);
        int target = _rowCache.Take(prompt, Occupied(), limit, sequence.LongFactorKeys, out int held);
        int reused = held;
        if (bestLength > held + 1 && best != target) // a copy for BOS alone (every prompt has it) would cost more than it saves
        {
            Cache.CopySegment(Cache, MaxLength, best, 0, bestLength, MaxLength, target, 0);
            if (bestIsCached) _rowCache.Touch(best);
            reused = bestLength;
        }
        Reserve(target, sequence, reused);
        return reused;
    }

    public override bool TryBeginBatchedPrefill(BatchedSequence sequence, IReadOnlyList<PrefillPiece> run)
    {
        if (run.Count >= _prefillRows) return false;
        var prompt = sequence.PromptIds;
        if (BestPrefix(prompt, prompt.Length - 1, sequence.LongFactorKeys).Length > 1) return false; // worth more than sharing a run: it goes alone
        // One run rotates every row with the factors its largest position picks: LongRoPE's sides run apart.
        if (run.Count > 0 && run[0].Sequence.LongFactorKeys != sequence.LongFactorKeys) return false;
        int row;
        if (run.Count == 0) row = LongestFreeBlock();
        else
        {
            row = Array.IndexOf(_reserved, run[^1].Sequence) + 1; // the run's rows are consecutive
            if (row >= Live.Length || !Unclaimed(row)) row = -1;
        }
        if (row < 0) return false;
        Reserve(row, sequence, 0);
        return true;
    }

    /// <summary>A row a shared prefill run may write from column 0: free, and caching no finished sequence's
    /// tokens (evicting those is the alone path's choice, least recently used first; a shared run would take
    /// whichever rows happen to be consecutive).</summary>
    private bool Unclaimed(int row) => Live[row] is null && _reserved[row] is null && _rowCache.TokensOf(row) is null;

    /// <summary>The first row of the longest block of consecutive unclaimed rows (the lowest such block), or -1.</summary>
    private int LongestFreeBlock()
    {
        int bestStart = -1, bestLength = 0;
        for (int row = 0; row < Live.Length;)
        {
            if (!Unclaimed(row)) { row++; continue; }
            int start = row;
            while (row < Live.Length && Unclaimed(row)) row++;
            if (row - start > bestLength) (bestStart, bestLength) = (start, row - start);
        }
        return bestStart;
    }

    private void Reserve(int row, BatchedSequence sequence, int done)
    {
        _reserved[row] = sequence;
        _reservedDone[row] = done;
    }

    private int RowOf(BatchedSequence sequence)
    {
        int row = Array.IndexOf(_reserved, sequence);
        return row >= 0 ? row : throw new InvalidOperationException("the prompt has no reserved row: begin its prefill first");
    }

    public override void Prefill(IReadOnlyList<PrefillPiece> pieces, CancellationToken cancellationToken)
    {
        int rows = pieces.Count;
        if (rows == 1)
        {
            var (sequence, done, size) = pieces[0];
            int row = RowOf(sequence), total = done + size;
            var ids = _prefill.Ids(1, size);
            var positions = _prefill.Positions(1, size);
            for (int t = 0; t < size; t++)
            {
                ids[t] = sequence.PromptIds[done + t];
                positions[t] = done + t;
            }
            _prefill.Mask(1, total).Fill(1);
            _prefill.Run(1, size, total, Cache, row, done, cancellationToken, leftPadded: false);
            _reservedDone[row] = total;
            return;
        }
        if (rows > _prefillRows) throw new ArgumentOutOfRangeException(nameof(pieces), rows, $"a prefill run holds at most {_prefillRows} rows");
        // Consecutive rows from the first piece's, every piece from column 0, right padded to the longest: [rows, width].
        int first = RowOf(pieces[0].Sequence), width = 0;
        for (int i = 0; i < rows; i++)
        {
            if (pieces[i].Done != 0 || !ReferenceEquals(_reserved[first + i], pieces[i].Sequence))
                throw new InvalidOperationException("prompts prefilled side by side start at column 0 in consecutive reserved rows");
            width = Math.Max(width, pieces[i].Size);
        }
        var runIds = _prefill.Ids(rows, width);
        var runPositions = _prefill.Positions(rows, width);
        var mask = _prefill.Mask(rows, width);
        for (int i = 0; i < rows; i++)
        {
            var (sequence, _, size) = pieces[i];
            for (int t = 0; t < width; t++)
            {
                runIds[i * width + t] = t < size ? sequence.PromptIds[t] : _pad;
                runPositions[i * width + t] = t;
                mask[i * width + t] = t < size ? 1 : 0;
            }
            _pieceTokens[i] = size;
        }
        _prefill.Run(rows, width, width, Cache, first, pastLength: 0, cancellationToken, rowTokens: _pieceTokens.AsSpan(0, rows), leftPadded: false);
        for (int i = 0; i < rows; i++) _reservedDone[first + i] = pieces[i].Size;
    }

    public override ReadOnlySpan<float> PrefillLogits(int index) => _prefill.Logits.Slice(index * _vocab, _vocab);

    public override void EndPrefill(BatchedSequence sequence, bool place, int validTokens)
    {
        int row = RowOf(sequence);
        if (place) Live[row] = sequence;
        else if (validTokens > 0) _rowCache.Keep(row, sequence.PromptIds[..validTokens], sequence.LongFactorKeys);
        _reserved[row] = null;
        _reservedDone[row] = 0;
    }

    /// <summary>Every row's ones start at column 0 (its zeros, if any, come after its tokens).</summary>
    public override bool LeftPads => false;

    public override void PrepareStep(int rows)
    {
        // The step is as wide as the longest row, riding rows included.
        int width = 0;
        for (int row = 0; row < rows; row++)
            if (Live[row] is { } active) width = Math.Max(width, active.Positions);
            else if (_reserved[row] is not null) width = Math.Max(width, RideAlongColumn(_reservedDone[row]));
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
        else if (_reserved[row] is not null)
        {
            id = _pad; // the next prompt chunk overwrites this column
            column = RideAlongColumn(_reservedDone[row]);
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
        // A riding pad's key is never attended; position 0 keeps it out of the run's largest position, which picks
        // LongRoPE's factors (and dynamic NTK's base) for every row of the run.
        position = Live[row] is null ? 0 : column;
        mask[..(column + 1)].Fill(1);
        mask[(column + 1)..].Clear();
    }

    public override void FillSittingRow(int row, Span<long> mask, out long id, out long position)
    {
        int column = Live[row]!.Positions; // the row's next step writes its own token over this pad
        (id, position) = (_pad, 0);
        mask[..(column + 1)].Fill(1);
        mask[(column + 1)..].Clear();
    }

    public override bool RerunWithLongFactors(int row, BatchedSequence sequence, CancellationToken cancellationToken)
    {
        var tokens = sequence.SequenceWithPending();
        int n = tokens.Length;
        var ids = _prefill.Ids(1, n);
        var positions = _prefill.Positions(1, n);
        for (int t = 0; t < n; t++) (ids[t], positions[t]) = (tokens[t], t);
        _prefill.Mask(1, n).Fill(1);
        _prefill.Run(1, n, n, Cache, row, pastLength: 0, cancellationToken, leftPadded: false);
        return true;
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
        _rowCache.Keep(row, tokens, sequence.LongFactorKeys);
    }

    public override void Reset()
    {
        base.Reset();
        _rowCache.Clear();
        Array.Clear(_reserved);
        Array.Clear(_reservedDone);
    }

    public override void Dispose()
    {
        _prefill?.Dispose();
        base.Dispose();
    }
}
