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
    /// <summary>Tokens one scheduler step may run: the decoding rows' one each, the rest for one prefill run
    /// (the prompt tokens of every prompt in it, padding not counted; at least one, so prefill always moves).
    /// 0: no budget.</summary>
    public int StepTokenBudget { get; init; }
    /// <summary>Called on the scheduler thread after each prefill run (diagnostics and tests); keep it quick.</summary>
    public Action<PrefillRunInfo>? PrefillObserver { get; init; }
    /// <summary>Refuse to start when the KV caches would exceed this many bytes (null: no limit).</summary>
    public long? MaxKvCacheBytes { get; init; }
    /// <summary>Speculative decoding for every unconstrained request: "ngram" (prompt lookup: drafts copied from the
    /// sequence's own context) or the folder of a draft model (a smaller export with the same tokenizer; each row
    /// gets its own draft KV cache). Rows with drafts verify them in the batched run, k + 1 positions each.
    /// Null: one token per row per step. Needs the ort lowering (rows that keep their own lengths) and logits
    /// for every position.</summary>
    public string? Speculative { get; init; }
    /// <summary>Tokens drafted per row and step at most (k), with <see cref="Speculative"/>.</summary>
    public int DraftTokens { get; init; } = 3;
    /// <summary>With <see cref="Speculative"/>: verify every step's drafts even while several rows decode and their
    /// acceptance so far says one shared step would be faster (each row then runs alone); for measurements and tests.</summary>
    public bool AlwaysVerifyDrafts { get; init; }
    /// <summary>Where a draft model runs (default: the CPU).</summary>
    public ExecutionProviderOptions? DraftProviders { get; init; }

    /// <summary>Checks these options against <paramref name="model"/>; returns the max length.</summary>
    internal int Check(DecoderModel model)
    {
        var folder = model.Folder;
        if (MaxSequences is <= 0 or > 4096) throw new ArgumentOutOfRangeException(nameof(MaxSequences), MaxSequences, "MaxSequences must be between 1 and 4096");
        if (MaxQueueLength < 0) throw new ArgumentOutOfRangeException(nameof(MaxQueueLength), MaxQueueLength, "MaxQueueLength must not be negative");
        if (PrefillChunk < 0) throw new ArgumentOutOfRangeException(nameof(PrefillChunk), PrefillChunk, "PrefillChunk must not be negative");
        if (StepTokenBudget < 0) throw new ArgumentOutOfRangeException(nameof(StepTokenBudget), StepTokenBudget, "StepTokenBudget must not be negative");
        if (Speculative is not null) Speculation.BatchSpeculation.CheckOptions(this, model);
        int maxLength = MaxLength ?? folder.ContextLength;
        if (maxLength <= 1 || maxLength > folder.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(MaxLength), maxLength, $"MaxLength must be between 2 and the model's context length ({folder.ContextLength})");
        int prefillRows = model.RowsKeepOwnLengths ? 0 : 1; // the shared timeline prefills in a cache of its own
        long bytes = KvCache.BytesFor(folder.NumLayers, MaxSequences + prefillRows, folder.NumKvHeads, maxLength, folder.HeadSize, folder.PastPresentShareBuffer, model.KvElementType);
        if (MaxKvCacheBytes is { } budget && bytes > budget)
            throw new InvalidOperationException($"the KV caches need {bytes:N0} bytes ({MaxSequences} rows{(prefillRows > 0 ? " + 1 prefill row" : "")} x {maxLength} positions), over the budget of {budget:N0}: lower MaxSequences or MaxLength");
        return maxLength;
    }
}

/// <summary>Every row is busy and the wait queue is full: retry later (HTTP 429/503).</summary>
public sealed class QueueFullException(string message) : InvalidOperationException(message);

/// <summary>One prefill run of a <see cref="ContinuousBatcher"/>: <paramref name="Prompts"/> prompts side by side,
/// <paramref name="PromptTokens"/> of their tokens in all, the run <paramref name="Width"/> tokens wide (the longest
/// piece; shorter ones are padded), while <paramref name="DecodingRows"/> rows decode between runs.</summary>
public readonly record struct PrefillRunInfo(int Prompts, int PromptTokens, int Width, int DecodingRows);
