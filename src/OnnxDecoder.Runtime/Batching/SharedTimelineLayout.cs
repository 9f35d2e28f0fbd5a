namespace OnnxDecoder.Runtime;

/// <summary>
/// Rows on one shared timeline (the portable lowering, whose Concat appends every row at the same
/// column): a row's tokens end at the current column, with left padding before them, and each row
/// keeps its own position ids. A prompt is prefilled alone in a batch-of-one session and its keys
/// and values are copied once into the row, so that they end at the current column; a prompt longer
/// than the timeline shifts the running rows right, and a timeline that reaches the max length is
/// compacted to the longest live row. Those moves copy KV memory, rarely. Only the last prompt is
/// reused as a prefix (the prefill session keeps it, with a shared KV buffer).
/// </summary>
internal sealed class SharedTimelineLayout : RowLayout
{
    private readonly DecoderSession _prefill;    // batch of one: prompts run here, then move into a row
    private readonly List<int> _prefillTokens = []; // the tokens whose KV the prefill session holds
    private readonly long[] _ids;                 // [max_length] scratch for a prompt chunk
    private readonly int[] _rowStart;             // first column of each row's tokens on the timeline
    private readonly int[] _rowLength, _startScratch; // scratch for relayouts
    private readonly List<int>[] _holes;          // per row: columns (from its start) of steps it sat out, masked from then on
    private readonly int _pad, _vocab;
    private int _prefillRow = -1;

    public SharedTimelineLayout(DecoderModel model, int rows, int maxLength) : base(model.CreateKvCache(rows, maxLength), rows)
    {
        _ids = new long[maxLength];
        _rowStart = new int[rows];
        _rowLength = new int[rows];
        _startScratch = new int[rows];
        _holes = new List<int>[rows];
        for (int row = 0; row < rows; row++) _holes[row] = [];
        _pad = model.Folder.PadTokenId;
        _vocab = model.Folder.VocabSize;
        try
        {
            _prefill = new DecoderSession(model, new DecoderSessionOptions { MaxLength = maxLength, PrefillChunk = 0 });
        }
        catch
        {
            Cache.Dispose();
            throw;
        }
    }

    public override long KvCacheBytes => Cache.TotalBytes + _prefill.KvCacheBytes;

    public override int BeginPrefill(BatchedSequence sequence)
    {
        var prompt = sequence.PromptIds;
        int common = _prefill.CanTruncate ? RowPrefixCache.CommonPrefix(_prefillTokens, prompt, prompt.Length - 1) : 0;
        if (_prefill.LongFactorKeys != sequence.LongFactorKeys) common = 0; // rotated with the other LongRoPE factors: of no use
        if (common == 0) _prefill.Reset();
        else _prefill.TruncateTo(common);
        _prefillTokens.RemoveRange(common, _prefillTokens.Count - common);
        _prefillRow = Array.IndexOf(Live, null);
        if (_prefillRow < 0) throw new InvalidOperationException("no free row: admit a request only while a row is free");
        return common;
    }

    /// <summary>One prompt at a time (the batch-of-one prefill session holds one prompt's KV).</summary>
    public override bool HasFreeRow => _prefillRow < 0 && Array.IndexOf(Live, null) >= 0;

    public override void Prefill(IReadOnlyList<PrefillPiece> pieces, CancellationToken cancellationToken)
    {
        if (pieces.Count != 1) throw new InvalidOperationException("the shared timeline prefills one prompt per run");
        var (sequence, done, size) = pieces[0];
        for (int t = 0; t < size; t++) _ids[t] = sequence.PromptIds[done + t];
        _prefill.Append(_ids.AsSpan(0, size), size, cancellationToken: cancellationToken);
        _prefillTokens.AddRange(sequence.PromptIds.AsSpan(done, size));
    }

    public override ReadOnlySpan<float> PrefillLogits(int index) => index == 0 ? _prefill.Logits[.._vocab] : throw new ArgumentOutOfRangeException(nameof(index));

    public override void EndPrefill(BatchedSequence sequence, bool place, int validTokens)
    {
        if (place) Place(sequence, _prefillRow);
        else if (validTokens == 0)
        {
            _prefill.Reset();
            _prefillTokens.Clear();
        }
        _prefillRow = -1;
    }

    /// <summary>Copies the prefilled prompt into <paramref name="row"/> so that it ends at the timeline's current column.</summary>
    private void Place(BatchedSequence sequence, int row)
    {
        int count = sequence.PromptIds.Length;
        int rows = ActiveRows();
        if (rows == 0) Relayout(0, count);            // an empty batch starts a fresh timeline
        else if (count > Width) Relayout(rows, count); // shift the running rows right to make room
        int start = Width - count;
        Cache.CopySegment(_prefill.Cache, count, 0, 0, count, Width, row, start);
        _rowStart[row] = start;
        _holes[row].Clear();
        Live[row] = sequence;
    }

    /// <summary>Moves every live row so that it ends at column <paramref name="newLength"/>.</summary>
    private void Relayout(int rows, int newLength)
    {
        for (int row = 0; row < rows; row++)
        {
            _rowLength[row] = Live[row] is null ? 0 : Width - _rowStart[row];
            _startScratch[row] = Live[row] is null ? 0 : _rowStart[row];
        }
        Cache.Relayout(rows, _startScratch.AsSpan(0, rows), _rowLength.AsSpan(0, rows), Width, newLength);
        for (int row = 0; row < rows; row++)
            if (Live[row] is not null) _rowStart[row] = newLength - _rowLength[row];
        Width = newLength;
    }

    public override void PrepareStep(int rows)
    {
        if (Width + 1 <= MaxLength) return;
        int longest = 0;
        for (int row = 0; row < rows; row++)
            if (Live[row] is not null) longest = Math.Max(longest, Width - _rowStart[row]);
        Relayout(rows, longest);
        Compactions++;
    }

    public override void FillRow(int row, Span<long> mask, out long id, out long position)
    {
        if (Live[row] is { } sequence)
        {
            id = sequence.State.Generated[^1];
            position = sequence.Positions;
            FillLiveMask(row, mask);
            return;
        }
        // An empty row rides along with a pad token that attends only to itself.
        id = _pad;
        position = 0;
        mask.Clear();
        mask[^1] = 1;
    }

    /// <summary>A live row's mask: zeros before its start and over the columns of steps it sat out, ones elsewhere.</summary>
    private void FillLiveMask(int row, Span<long> mask)
    {
        int start = _rowStart[row];
        mask[..start].Clear();
        mask[start..].Fill(1);
        foreach (int hole in _holes[row]) mask[start + hole] = 0;
    }

    public override void FillSittingRow(int row, Span<long> mask, out long id, out long position)
    {
        // Every row gets this step's column: a pad there, masked in this row now and in every later step.
        FillLiveMask(row, mask);
        mask[^1] = 0;
        _holes[row].Add(mask.Length - 1 - _rowStart[row]);
        (id, position) = (_pad, 0);
    }

    public override bool RerunWithLongFactors(int row, BatchedSequence sequence, CancellationToken cancellationToken)
    {
        if (_prefillRow >= 0) return false; // the prefill session holds a prompt being prefilled: the row waits for it
        // The whole sequence with its pending token runs in the prefill session; the keys of all but the pending token
        // are copied so that they end at the current column (the row's next step runs the pending token).
        var tokens = sequence.SequenceWithPending();
        int n = tokens.Length, kept = n - 1;
        for (int t = 0; t < n; t++) _ids[t] = tokens[t];
        _prefill.Reset();
        _prefill.Append(_ids.AsSpan(0, n), n, cancellationToken: cancellationToken);
        _prefillTokens.Clear();
        _prefillTokens.AddRange(tokens); // a later prompt may start from them
        int start = Width - kept;
        Cache.CopySegment(_prefill.Cache, n, 0, 0, kept, Width, row, start);
        _rowStart[row] = start;
        _holes[row].Clear();
        return true;
    }

    public override void Reset()
    {
        base.Reset();
        _prefill.Reset();
        _prefillTokens.Clear();
        _prefillRow = -1;
    }

    public override void Dispose()
    {
        _prefill?.Dispose();
        base.Dispose();
    }
}
