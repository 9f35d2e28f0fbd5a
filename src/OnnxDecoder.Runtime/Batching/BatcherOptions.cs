namespace OnnxDecoder.Runtime;

/// <summary>How a <see cref="ContinuousBatcher"/> is sized and scheduled.</summary>
public sealed record BatcherOptions
{
    /// <summary>Sequences decoded together: rows of the batch, each with its own row of the KV cache.</summary>
    public int MaxSequences { get; init; } = 8;
    /// <summary>Requests that may wait for a free row before new ones are refused.</summary>
    public int MaxQueueLength { get; init; } = 64;
    /// <summary>Positions of each row (and so the longest sequence); default: the model's context.</summary>
    public int? MaxLength { get; init; }
    /// <summary>Prefill a new prompt in chunks of at most this many tokens, with a decode step of the
    /// running sequences between chunks (0: the whole prompt in one run).</summary>
    public int PrefillChunk { get; init; }
    /// <summary>Tokens one scheduler step may run: the decoding rows' one each, the rest for a prompt chunk
    /// (at least one prompt token, so prefill always moves). 0: no budget.</summary>
    public int StepTokenBudget { get; init; }
    /// <summary>Refuse to start when the KV caches would exceed this many bytes (null: no limit).</summary>
    public long? MaxKvCacheBytes { get; init; }
}

/// <summary>Every row is busy and the wait queue is full: retry later (HTTP 429/503).</summary>
public sealed class QueueFullException(string message) : InvalidOperationException(message);
