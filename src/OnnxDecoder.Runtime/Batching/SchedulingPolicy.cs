namespace OnnxDecoder.Runtime;

/// <summary>
/// The batcher's scheduling decisions, in one place: which waiting request is admitted next (higher
/// <see cref="BatchedSequence.Priority"/> first, first come first served within a priority) and how
/// many prompt tokens run before the next decode step (the prefill chunk, and what the per-step
/// token budget leaves after the decoding rows). A different policy changes this class only.
/// Thread-safe: requests are queued from any thread, taken by the scheduler thread.
/// </summary>
internal sealed class SchedulingPolicy(int prefillChunk, int stepTokenBudget)
{
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

    /// <summary>Prompt tokens to run now for a prompt with <paramref name="remaining"/> tokens to go while
    /// <paramref name="decodingRows"/> rows decode one token each in the next step.</summary>
    public int PrefillTokens(int remaining, int decodingRows)
    {
        int size = remaining;
        if (prefillChunk > 0) size = Math.Min(size, prefillChunk);
        if (stepTokenBudget > 0) size = Math.Min(size, Math.Max(1, stepTokenBudget - decodingRows));
        return size;
    }
}
