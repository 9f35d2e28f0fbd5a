namespace OnnxDecoder.Runtime;

/// <summary>
/// The batcher's scheduling decisions, in one place: which waiting request is admitted next (higher
/// <see cref="BatchedSequence.Priority"/> first, first come first served within a priority), how many
/// prompt tokens one prefill run may hold (the per-step token budget less one token per decoding row),
/// how much of each prompt goes into it (the prefill chunk) and which waiting prompts join it. A
/// different policy changes this class only.
/// <para>
/// A prefill run holds the next waiting prompt (cut to the room left, so a long prompt is chunked
/// over several runs) and then, while free rows and room remain, the following prompts in admission
/// order whose whole next piece fits in the room and whose row would not make the run mostly padding
/// (rows of one run are padded to its longest piece, and the padding is computed too). The first
/// prompt that does not fit ends the run: nothing is admitted out of order.
/// </para>
/// Thread-safe: requests are queued from any thread, taken by the scheduler thread.
/// </summary>
internal sealed class SchedulingPolicy(int prefillChunk, int stepTokenBudget)
{
    /// <summary>A run's computed tokens (rows x longest piece) may be at most this many times its prompt tokens.</summary>
    private const int MaxPaddedPerRealToken = 2;
    private readonly PriorityQueue<BatchedSequence, (int Priority, long Arrival)> _waiting = new();
    private readonly object _gate = new();
    private long _arrivals;

    /// <summary>Requests waiting for a row.</summary>
    public int Count
    {
        get { lock (_gate) return _waiting.Count; }
    }

    public void Enqueue(BatchedSequence sequence)
    {
        lock (_gate) _waiting.Enqueue(sequence, (-sequence.Priority, _arrivals++));
    }

    /// <summary>The request to admit next, if any waits.</summary>
    public bool TryTake(out BatchedSequence sequence)
    {
        lock (_gate) return _waiting.TryDequeue(out sequence!, out _);
    }

    /// <summary>The request to admit next, if one waits and <paramref name="accept"/> takes it (it stays first in line otherwise).</summary>
    public bool TryTakeIf(Func<BatchedSequence, bool> accept, out BatchedSequence sequence)
    {
        lock (_gate)
        {
            if (_waiting.TryPeek(out sequence!, out _) && (sequence.IsCancelled || accept(sequence))) return _waiting.TryDequeue(out sequence!, out _);
            sequence = null!;
            return false;
        }
    }

    /// <summary>Prompt tokens one prefill run may hold while <paramref name="decodingRows"/> rows decode one token
    /// each in the same scheduler step: the budget less those rows, at least one so that prefill always moves.</summary>
    public int RunTokens(int decodingRows) =>
        stepTokenBudget > 0 ? Math.Max(1, stepTokenBudget - decodingRows) : int.MaxValue;

    /// <summary>Tokens of the first prompt of a run, with <paramref name="remaining"/> tokens to go and
    /// <paramref name="room"/> tokens the run may hold.</summary>
    public int PrefillTokens(int remaining, int room)
    {
        int size = remaining;
        if (prefillChunk > 0) size = Math.Min(size, prefillChunk);
        return Math.Min(size, room);
    }

    /// <summary>The piece a prompt with <paramref name="remaining"/> tokens to go would add to a run
    /// holding <paramref name="rows"/> rows, <paramref name="tokens"/> prompt tokens and pieces of up to
    /// <paramref name="longest"/> tokens, <paramref name="room"/> tokens still free; 0 when it does not join.
    /// <paramref name="equalPiecesOnly"/>: the graph's logits cover the last position only, so every row
    /// of a run must end at the same column.</summary>
    public int JoiningTokens(int remaining, int rows, int tokens, int longest, int room, bool equalPiecesOnly)
    {
        int size = prefillChunk > 0 ? Math.Min(remaining, prefillChunk) : remaining;
        if (size > room) return 0;
        if (equalPiecesOnly && size != longest) return 0;
        long padded = (long)(rows + 1) * Math.Max(longest, size);
        return padded <= (long)MaxPaddedPerRealToken * (tokens + size) ? size : 0;
    }
}
