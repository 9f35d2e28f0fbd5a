using System.Diagnostics;
using System.Runtime.CompilerServices;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Continuous batching over one loaded model. Requests wait in a bounded queue; the
/// <see cref="SchedulingPolicy"/> picks which is admitted next and how much of its prompt runs
/// between decode steps; the <see cref="RowLayout"/> puts the prompt's keys and values into a free
/// row of the batch KV cache (straight into the row with the ort lowering, copied once on the shared
/// timeline of the portable lowering); from then on one ONNX Runtime run decodes one token for every
/// active row. A new request joins between two steps; a finished, cancelled or abandoned request
/// leaves its row at the next step boundary. With the ort lowering a finished row keeps its KV as a
/// prefix cache for later prompts (see <see cref="OwnLengthsLayout"/>).
/// One scheduler thread owns the layout, the cache and every row; callers only enqueue and read.
/// </summary>
public sealed partial class ContinuousBatcher : IDisposable
{
    private readonly DecoderModel _model;
    private readonly TextTokenizer _tokenizer;
    private readonly BatcherOptions _options;
    private readonly SchedulingPolicy _policy;
    private readonly RowLayout _layout;
    private readonly BoundRunStep _step;               // [rows] ids and positions, [rows, T] mask, [rows, vocab] logits
    private readonly int _rowsCapacity, _vocab;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _shutdown = new();
    private readonly Thread _scheduler;
    private BatchedSequence? _prefilling;             // admitted, its prompt partly run
    private int _prefilled;                           // prompt tokens of _prefilling whose KV is in place
    private int _outstanding;                         // queued + prefilling + decoding
    private long _steps, _rowSteps, _stepTicks, _reusedPrefixTokens;

    public ContinuousBatcher(DecoderModel model, TextTokenizer tokenizer, BatcherOptions? options = null)
    {
        _model = model;
        _tokenizer = tokenizer;
        _options = options ?? new BatcherOptions();
        _rowsCapacity = _options.MaxSequences;
        MaxLength = _options.Check(model);
        _vocab = model.Folder.VocabSize;
        _policy = new SchedulingPolicy(_options.PrefillChunk, _options.StepTokenBudget);
        _layout = model.RowsKeepOwnLengths ? new OwnLengthsLayout(model, _rowsCapacity, MaxLength) : new SharedTimelineLayout(model, _rowsCapacity, MaxLength);
        try
        {
            if (_options.Speculative is not null) _speculation = new Speculation.BatchSpeculation(model, _options, _rowsCapacity, MaxLength);
            _step = new BoundRunStep(model, _rowsCapacity, maxTokens: 1, MaxLength);
        }
        catch { _speculation?.Dispose(); _layout.Dispose(); throw; }
        _scheduler = new Thread(Schedule) { IsBackground = true, Name = "OnnxDecoder batch scheduler" };
        _scheduler.Start();
    }

    public DecoderModel Model => _model;
    public TextTokenizer Tokenizer => _tokenizer;
    public int MaxSequences => _rowsCapacity;
    public int MaxLength { get; }
    public long KvCacheBytes => _layout.KvCacheBytes;
    /// <summary>Where the batch KV cache lives and the views and copies it has made.</summary>
    public KvCacheStatistics KvStatistics => _layout.Cache.Statistics;
    /// <summary>Requests submitted and not finished (queued, prefilling or decoding).</summary>
    public int Outstanding => Volatile.Read(ref _outstanding);
    /// <summary>Batched decode runs so far.</summary>
    public long Steps => Interlocked.Read(ref _steps);
    /// <summary>Tokens those runs decoded (rows that held a sequence); over <see cref="Steps"/>, the mean batch occupancy.</summary>
    public long RowSteps => Interlocked.Read(ref _rowSteps);
    /// <summary>Time spent in batched decode runs (sampling included); <see cref="RowSteps"/> over it is the aggregate decode rate.</summary>
    public TimeSpan DecodeTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _stepTicks));
    /// <summary>Prompt tokens not run again because their keys and values were already cached
    /// (a shared system prompt, or the earlier turns of a conversation).</summary>
    public long ReusedPrefixTokens => Interlocked.Read(ref _reusedPrefixTokens);
    /// <summary>Requests waiting for a row (not yet prefilling).</summary>
    public int QueueLength => _policy.Count;
    /// <summary>Rows that hold a decoding sequence now. Read from any thread as a gauge.</summary>
    public int RowsInUse => _layout.LiveCount;
    /// <summary>Sequences being prefilled or decoded now (a gauge, like <see cref="RowsInUse"/>).</summary>
    public int ActiveSequences => RowsInUse + (Volatile.Read(ref _prefilling) is null ? 0 : 1);
    /// <summary>Free rows that still hold a finished sequence's KV for a later prompt to start from (a gauge).</summary>
    public int CachedRows => _layout.CachedRows;
    /// <summary>Times the shared timeline reached the max length and was compacted (each moves the live KV once).</summary>
    public long Compactions => _layout.Compactions;

    /// <summary>
    /// Queues a generation after <paramref name="promptIds"/> (BOS included). Throws at once for a
    /// request that cannot run (<see cref="QueueFullException"/>, <see cref="ContextFullException"/>,
    /// invalid options); otherwise the returned sequence streams its tokens. Cancelling
    /// <paramref name="cancellationToken"/> or disposing the sequence frees its row within one step.
    /// A higher <paramref name="priority"/> is admitted before waiting requests of lower priority.
    /// With <see cref="BatcherOptions.Speculative"/>, an unconstrained request decodes speculatively unless
    /// <paramref name="speculative"/> is false.
    /// </summary>
    public BatchedSequence Submit(IReadOnlyList<int> promptIds, GenerationOptions options, CancellationToken cancellationToken = default, int priority = 0,
        bool speculative = true)
    {
        ObjectDisposedException.ThrowIf(_shutdown.IsCancellationRequested, this);
        foreach (int id in promptIds)
            if ((uint)id >= (uint)_vocab) throw new ArgumentOutOfRangeException(nameof(promptIds), id, $"token id {id} is outside the vocabulary (0..{_vocab - 1})");
        var state = new GenerationState(options, _model.Folder.EosTokenIds, _tokenizer, _vocab, [], promptIds);
        if (promptIds.Count > MaxLength)
            throw new ContextFullException($"the prompt needs {promptIds.Count} positions but the max length is {MaxLength}: shorten the prompt");
        int capacity = _rowsCapacity + _options.MaxQueueLength;
        if (Interlocked.Increment(ref _outstanding) > capacity)
        {
            int waiting = Interlocked.Decrement(ref _outstanding) - _rowsCapacity;
            throw new QueueFullException($"all {_rowsCapacity} sequences are busy and {Math.Max(0, waiting)} requests already wait (limit {_options.MaxQueueLength}): retry later");
        }
        var sequence = new BatchedSequence(this, [.. promptIds], state, priority, cancellationToken)
        {
            Speculation = speculative ? _speculation?.For(options, promptIds) : null,
        };
        _policy.Enqueue(sequence);
        _wake.Release();
        return sequence;
    }

    /// <summary>Streams one generation through the batch; leaving the loop early frees its row.</summary>
    public async IAsyncEnumerable<GeneratedToken> StreamAsync(IReadOnlyList<int> promptIds, GenerationOptions options, Action<GenerationResult>? onResult = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var sequence = Submit(promptIds, options, cancellationToken);
        await foreach (var token in sequence.Tokens.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            yield return token;
        var result = await sequence.Completion.ConfigureAwait(false);
        onResult?.Invoke(result);
    }

    /// <summary>Generates through the batch and returns the whole result.</summary>
    public async Task<GenerationResult> GenerateAsync(IReadOnlyList<int> promptIds, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        using var sequence = Submit(promptIds, options, cancellationToken);
        return await sequence.Completion.ConfigureAwait(false);
    }

    /// <summary>A request was cancelled: it stops counting against the queue limit at once (its
    /// row, if it has one, is freed at the next step boundary) and the scheduler wakes to drop it.</summary>
    internal void OnCancelled(BatchedSequence sequence)
    {
        if (sequence.TakeSlot()) Interlocked.Decrement(ref _outstanding);
        try { _wake.Release(); } catch (ObjectDisposedException) { }
    }

    private void Schedule()
    {
        while (!_shutdown.IsCancellationRequested)
        {
            try
            {
                DropCancelled();
                Admit();
                if (_layout.ActiveRows() > 0) Step();
                else if (_prefilling is null) _wake.Wait(_shutdown.Token);
            }
            catch (Exception) when (_shutdown.IsCancellationRequested)
            {
                break; // a run terminated by Dispose: every sequence gets the shutdown error below
            }
            catch (Exception e)
            {
                FailAll(e); // a failed run leaves the cache undefined: every running sequence gets the error
            }
        }
        var closed = new ObjectDisposedException(nameof(ContinuousBatcher), "the batcher was shut down before this request finished");
        FailAll(closed);
        while (_policy.TryTake(out var queued)) Complete(queued, closed);
    }

    private void DropCancelled()
    {
        var live = _layout.Live;
        for (int row = 0; row < live.Length; row++)
            if (live[row] is { IsCancelled: true } sequence)
            {
                _layout.Release(row, sequence);
                Complete(sequence, null);
            }
        if (_prefilling is { IsCancelled: true } prefilling) EndPrefill(prefilling, place: false, _prefilled, null);
    }

    /// <summary>Moves waiting requests into free rows: runs (a chunk of) one prompt, and once a prompt
    /// is whole, samples its first token and lets it decode in its row.</summary>
    private void Admit()
    {
        while (true)
        {
            if (_prefilling is null)
            {
                if (Array.IndexOf(_layout.Live, null) < 0 || !_policy.TryTake(out var next)) return;
                if (next.IsCancelled) { Complete(next, null); continue; }
                next.Clock.Restart();
                _prefilled = next.CachedPromptTokens = _layout.BeginPrefill(next);
                Interlocked.Add(ref _reusedPrefixTokens, _prefilled);
                _prefilling = next;
            }
            var sequence = _prefilling;
            int total = sequence.PromptIds.Length, decoding = _layout.ActiveRows() > 0 ? RowsInUse : 0;
            int size = _policy.PrefillTokens(total - _prefilled, decoding);
            ReadOnlySpan<float> logits;
            try
            {
                logits = _layout.Prefill(sequence, _prefilled, size, sequence.Token);
            }
            catch (Exception e) when (!_shutdown.IsCancellationRequested)
            {
                bool cancelled = e is OperationCanceledException;
                EndPrefill(sequence, place: false, cancelled ? _prefilled : 0, cancelled ? null : e);
                continue;
            }
            _prefilled += size;
            if (_prefilled < total)
            {
                if (decoding > 0) return; // the running rows take a step between chunks
                continue;
            }
            sequence.PrefillMs = sequence.Clock.Elapsed.TotalMilliseconds;
            var piece = sequence.State.Next(logits, total, MaxLength);
            sequence.FirstTokenMs = sequence.SinceSubmitted.Elapsed.TotalMilliseconds;
            if (piece is not null) sequence.Emit(piece);
            bool decodes = sequence.State.StopReason is null;
            if (decodes) sequence.Clock.Restart();
            EndPrefill(sequence, place: decodes, total, null);
        }
    }

    /// <summary>The prefilling request decodes in its row from now on, or leaves (finished at its first token, cancelled, failed).</summary>
    private void EndPrefill(BatchedSequence sequence, bool place, int validTokens, Exception? error)
    {
        _prefilling = null;
        _prefilled = 0;
        _layout.EndPrefill(sequence, place, validTokens);
        if (!place) Complete(sequence, error);
    }

    /// <summary>One batched decode run: a token for every row up to the highest active one (free rows ride along).</summary>
    private void Step()
    {
        long started = Stopwatch.GetTimestamp();
        try { StepRows(); }
        finally
        {
            Interlocked.Add(ref _stepTicks, Stopwatch.GetTimestamp() - started);
            _speculation?.AfterSharedStep();
        }
    }

    private void StepRows()
    {
        if (_speculation is not null && StepVerifyingDrafts()) return;
        int rows = _layout.ActiveRows();
        _layout.PrepareStep(rows);
        int total = _layout.Width + 1;
        var ids = _step.Ids(rows, 1);
        var positions = _step.Positions(rows, 1);
        var mask = _step.Mask(rows, total);
        for (int row = 0; row < rows; row++)
            _layout.FillRow(row, mask.Slice(row * total, total), out ids[row], out positions[row]);
        _step.Run(rows, 1, total, _layout.Cache, cacheRow: -1, _layout.Width, _shutdown.Token);
        _layout.AfterStep(total);
        Interlocked.Increment(ref _steps);
        var live = _layout.Live;
        var logits = _step.Logits;
        for (int row = 0; row < rows; row++)
        {
            if (live[row] is not { } sequence) continue;
            Interlocked.Increment(ref _rowSteps);
            sequence.DecodedSteps++;
            var piece = sequence.State.Next(logits.Slice(row * _vocab, _vocab), sequence.Positions, MaxLength);
            if (piece is not null) sequence.Emit(piece);
            if (sequence.State.StopReason is null) continue;
            _layout.Release(row, sequence);
            Complete(sequence, null);
        }
    }

    private void FailAll(Exception error)
    {
        var live = _layout.Live;
        for (int row = 0; row < live.Length; row++)
            if (live[row] is { } sequence)
            {
                live[row] = null;
                Complete(sequence, error);
            }
        if (_prefilling is { } prefilling)
        {
            _prefilling = null;
            Complete(prefilling, error);
        }
        _prefilled = 0;
        _layout.Reset();
    }

    /// <summary>Finishes a sequence: its result (or error, or cancellation) and its slot back.</summary>
    private void Complete(BatchedSequence sequence, Exception? error)
    {
        if (sequence.TakeSlot()) Interlocked.Decrement(ref _outstanding); // first: a caller that sees the result may submit again at once
        sequence.Finish(error);
    }

    public void Dispose()
    {
        if (_shutdown.IsCancellationRequested) return;
        _shutdown.Cancel();
        _wake.Release();
        if (_scheduler.IsAlive) _scheduler.Join();
        _step.Dispose();
        _speculation?.Dispose();
        _layout.Dispose();
        _shutdown.Dispose();
        _wake.Dispose();
    }
}
