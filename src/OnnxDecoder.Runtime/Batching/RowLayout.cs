namespace OnnxDecoder.Runtime;

/// <summary>
/// Where each row's tokens sit in the batch KV cache, how a prompt's keys and values get into its
/// row, and what each row feeds a decode step. <see cref="OwnLengthsLayout"/>: every row starts at
/// column 0 and keeps its own length (GroupQueryAttention over a shared buffer, lengths from the
/// mask). <see cref="SharedTimelineLayout"/>: rows share one timeline of columns, left padded (the
/// portable lowering, whose Concat appends every row at the same column). The batcher's loop is the
/// same over both. Used by the scheduler thread only.
/// </summary>
internal abstract class RowLayout(KvCache cache, int rows) : IDisposable
{
    /// <summary>[rows, kv_heads, max_length, head_dim] per layer and kind.</summary>
    public KvCache Cache { get; } = cache;
    /// <summary>The sequence decoding in each row (null: free, or reserved for the prompt being prefilled).</summary>
    public BatchedSequence?[] Live { get; } = new BatchedSequence?[rows];
    public int MaxLength => Cache.MaxLength;
    /// <summary>Past columns of the next decode step.</summary>
    public int Width { get; protected set; }
    public virtual long KvCacheBytes => Cache.TotalBytes;
    /// <summary>Free rows that still hold a finished sequence's KV for a later prompt.</summary>
    public virtual int CachedRows => 0;
    /// <summary>Times the timeline reached the max length and was compacted.</summary>
    public long Compactions { get; protected set; }

    /// <summary>Whether a row is free for one more prompt (not decoding, not reserved for a prompt being prefilled).</summary>
    public abstract bool HasFreeRow { get; }

    /// <summary>Whether several prompts may be prefilled side by side in one run (rows that keep their own lengths).</summary>
    public virtual bool BatchesPrefill => false;
    /// <summary>Whether a step's mask may hold a 0 before a row's last 1 (rows on one shared timeline, left padded).</summary>
    public virtual bool LeftPads => true;

    /// <summary>Whether the graph's logits cover every position, so rows of one prefill run may end at different columns.</summary>
    public virtual bool RowsMayEndApart => false;

    /// <summary>Reserves a free row for <paramref name="sequence"/>'s prompt, to be prefilled in runs of its own; returns
    /// how many of its first tokens already have their keys and values in place (a cached prefix), always fewer than all.</summary>
    public abstract int BeginPrefill(BatchedSequence sequence);

    /// <summary>Reserves a row for <paramref name="sequence"/>'s prompt next to the rows of <paramref name="run"/>
    /// (the prompts starting at column 0 in the run being formed; none for its first), its whole prompt to be
    /// run from position 0. False, reserving nothing, when it cannot join: a cached prefix of more than BOS is
    /// worth more than the shared run, or no free row lies next to the run's.</summary>
    public virtual bool TryBeginBatchedPrefill(BatchedSequence sequence, IReadOnlyList<PrefillPiece> run) => false;

    /// <summary>Runs every piece's prompt tokens [Done, Done + Size) in one run: one piece of any past, or
    /// several pieces of reserved rows from <see cref="TryBeginBatchedPrefill"/>, all from 0.</summary>
    public abstract void Prefill(IReadOnlyList<PrefillPiece> pieces, CancellationToken cancellationToken);

    /// <summary>The logits after the last token of piece <paramref name="index"/> of the last <see cref="Prefill"/>, [vocab].</summary>
    public abstract ReadOnlySpan<float> PrefillLogits(int index);

    /// <summary>The prompt is whole and decodes from now on in its reserved row (<paramref name="place"/>),
    /// or it leaves with <paramref name="validTokens"/> of its tokens' KV still sound (0 after a failed run).</summary>
    public abstract void EndPrefill(BatchedSequence sequence, bool place, int validTokens);

    /// <summary>Before a decode step over the first <paramref name="rows"/> rows: settles <see cref="Width"/>.</summary>
    public abstract void PrepareStep(int rows);

    /// <summary>What row <paramref name="row"/> feeds the step: its id, position and mask [Width + 1].</summary>
    public abstract void FillRow(int row, Span<long> mask, out long id, out long position);

    /// <summary>What live row <paramref name="row"/> feeds a step it sits out (its next token's run rotates with the other
    /// LongRoPE factors than this step's): a pad at position 0 that its own next step overwrites, or never attends.</summary>
    public abstract void FillSittingRow(int row, Span<long> mask, out long id, out long position);

    /// <summary>
    /// Runs again, in one run from position 0, every token whose keys <paramref name="sequence"/>'s row holds, and its
    /// pending token: the keys were rotated with LongRoPE's short factors and its next position passes the switch (as
    /// transformers' Phi-3 re-runs a generation that first passes original_max_position_embeddings). The row's next step
    /// then runs the pending token over long-factor keys. False when it cannot run now (the row sits out the step).
    /// </summary>
    public abstract bool RerunWithLongFactors(int row, BatchedSequence sequence, CancellationToken cancellationToken);

    /// <summary>After a successful step of <paramref name="total"/> columns.</summary>
    public void AfterStep(int total) => Width = total;

    /// <summary>A sequence leaves its row.</summary>
    public virtual void Release(int row, BatchedSequence sequence) => Live[row] = null;

    /// <summary>After a failed run: every row's KV is undefined. The batcher has emptied <see cref="Live"/>.</summary>
    public virtual void Reset()
    {
        Width = 0;
        Cache.Reset();
    }

    /// <summary>Rows that hold a decoding sequence (read from any thread as a gauge: reference reads are atomic).</summary>
    public int LiveCount
    {
        get
        {
            int used = 0;
            foreach (var row in Live) if (row is not null) used++;
            return used;
        }
    }

    /// <summary>One past the highest row that holds a sequence: the batch size of the next run.</summary>
    public int ActiveRows()
    {
        for (int row = Live.Length - 1; row >= 0; row--)
            if (Live[row] is not null) return row + 1;
        return 0;
    }

    public virtual void Dispose() => Cache.Dispose();
}

/// <summary>One prompt's share of a prefill run: its tokens [Done, Done + Size).</summary>
internal readonly record struct PrefillPiece(BatchedSequence Sequence, int Done, int Size);
