using System.Diagnostics;
using System.Threading.Channels;

namespace OnnxDecoder.Runtime;

/// <summary>
/// One request inside a <see cref="ContinuousBatcher"/>: its tokens as they are generated and its
/// final result. Disposing it before it finished cancels it and frees its row.
/// </summary>
public sealed class BatchedSequence : IDisposable
{
    private readonly ContinuousBatcher _owner;
    private readonly Channel<GeneratedToken> _tokens = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly TaskCompletionSource<GenerationResult> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _cancel;
    private readonly CancellationTokenRegistration _wakeOnCancel;
    private int _finished, _slotReturned;

    internal BatchedSequence(ContinuousBatcher owner, int[] promptIds, GenerationState state, int priority, CancellationToken cancellationToken)
    {
        _owner = owner;
        PromptIds = promptIds;
        State = state;
        Priority = priority;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _wakeOnCancel = _cancel.Token.Register(static o => { var s = (BatchedSequence)o!; s._owner.OnCancelled(s); }, this);
    }

    internal int[] PromptIds { get; }
    /// <summary>Higher is admitted first; equal priorities are served in arrival order.</summary>
    public int Priority { get; }
    internal GenerationState State { get; }
    internal CancellationToken Token => _cancel.Token;
    internal bool IsCancelled => _cancel.IsCancellationRequested;
    internal Stopwatch Clock { get; } = new();
    internal Stopwatch SinceSubmitted { get; } = Stopwatch.StartNew();
    /// <summary>Positions the sequence holds in the cache: its prompt and every decoded token.</summary>
    internal int Positions => PromptIds.Length + DecodedSteps;
    /// <summary>Generated tokens run through the model (their KV is in the row): one per plain step, the pending
    /// token and the drafts kept per speculative step.</summary>
    internal int DecodedSteps { get; set; }
    /// <summary>The keys in the sequence's row were rotated with LongRoPE's long factors (<see cref="DecoderModel.LongRopeSwitch"/>).</summary>
    internal bool LongFactorKeys { get; set; }

    /// <summary>Every token the row holds KV for (the prompt and each generated token fed back), and the pending token after them:
    /// [<see cref="Positions"/> + 1].</summary>
    internal int[] SequenceWithPending()
    {
        var generated = State.Generated;
        var tokens = new int[Positions + 1];
        PromptIds.CopyTo(tokens, 0);
        generated.CopyTo(0, tokens, PromptIds.Length, DecodedSteps);
        tokens[^1] = generated[^1];
        return tokens;
    }

    /// <summary>Prompt tokens whose keys and values are in place while the prompt is prefilled.</summary>
    internal int Prefilled { get; set; }
    /// <summary>This request's speculative decoding in the batch; null: one token per step (off, or constrained).</summary>
    internal Speculation.RowSpeculation? Speculation { get; init; }
    internal double PrefillMs { get; set; }
    internal double FirstTokenMs { get; set; }
    /// <summary>Prompt tokens whose keys and values were kept from the previous prompt instead of
    /// being run again (OpenAI's usage.prompt_tokens_details.cached_tokens); set once prefill starts.</summary>
    public int CachedPromptTokens { get; internal set; }

    /// <summary>Generated pieces, in order; completes when generation ends (with the error, if any).</summary>
    public ChannelReader<GeneratedToken> Tokens => _tokens.Reader;
    /// <summary>The whole result; cancelled when the request was cancelled.</summary>
    public Task<GenerationResult> Completion => _completion.Task;

    /// <summary>Stops this request; its row is freed at the next step boundary.</summary>
    public void Cancel()
    {
        try { _cancel.Cancel(); } catch (ObjectDisposedException) { }
    }

    /// <summary>True exactly once: whoever gets it returns this request's place in the queue limit.</summary>
    internal bool TakeSlot() => Interlocked.Exchange(ref _slotReturned, 1) == 0;

    internal void Emit(GeneratedToken piece) => _tokens.Writer.TryWrite(piece);

    /// <summary>Completes once; later calls do nothing.</summary>
    internal void Finish(Exception? error)
    {
        if (Interlocked.Exchange(ref _finished, 1) == 1) return;
        if (error is null && State.StopReason is { } reason)
        {
            if (State.Tail() is { } tail) Emit(tail);
            double decodeMs = Clock.IsRunning && PrefillMs > 0 ? Clock.Elapsed.TotalMilliseconds : 0;
            var timings = new GenerationTimings(PrefillMs, decodeMs, FirstTokenMs, PromptIds.Length, DecodedSteps);
            _completion.TrySetResult(new GenerationResult(PromptIds, [.. State.Generated], State.Text, reason, timings, Speculation?.Stats));
            _tokens.Writer.TryComplete();
        }
        else if (error is null)
        {
            var cancelled = new OperationCanceledException("the request was cancelled", _cancel.Token);
            _completion.TrySetCanceled(_cancel.Token);
            _tokens.Writer.TryComplete(cancelled);
        }
        else
        {
            _completion.TrySetException(error);
            _tokens.Writer.TryComplete(error);
        }
    }

    public void Dispose()
    {
        if (Volatile.Read(ref _finished) == 0) Cancel();
        _wakeOnCancel.Dispose();
    }
}
