using System.Diagnostics;
using System.Runtime.CompilerServices;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Continuous batching over one loaded model. Requests wait in a bounded queue; the
/// <see cref="SchedulingPolicy"/> picks which are admitted next and how much of their prompts one
/// prefill run holds between decode steps; the <see cref="RowLayout"/> puts the prompts' keys and values
/// into free rows of the batch KV cache (straight into the rows with the ort lowering, several prompts
/// side by side in one run; copied once on the shared timeline of the portable lowering, one prompt per
/// run); from then on one ONNX Runtime run decodes one token for every active row. A new request joins between two steps; a finished, cancelled or abandoned request
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
    private readonly List<BatchedSequence> _prefilling = []; // admitted, prompts partly run, in admission order
    private readonly List<PrefillPiece> _run = [];    // the prefill run being formed
    private int _prefillingCount;                     // _prefilling.Count, for gauges read from other threads
    private int _outstanding;                         // queued + prefilling + decoding
    private long _steps, _rowSteps, _stepTicks, _reusedPrefixTokens, _prefillRuns, _prefillRunTokens, _prefillRunRows;
    private long _longRopeReruns, _longRopeRerunPositions;

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
    /// <summary>Whether the scheduler still takes requests: false once disposed (or if its thread ended).</summary>
    public bool IsRunning => !_shutdown.IsCancellationRequested && _scheduler.IsAlive;
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
    /// <summary>Prefill runs so far (each holds one prompt's chunk, or several prompts side by side).</summary>
    public long PrefillRuns => Interlocked.Read(ref _prefillRuns);
    /// <summary>Prompt tokens those runs computed (padding excluded).</summary>
    public long PrefillRunTokens => Interlocked.Read(ref _prefillRunTokens);
    /// <summary>Prompts those runs held, summed over runs; over <see cref="PrefillRuns"/>, the mean prompts per prefill run.</summary>
    public long PrefillRunRows => Interlocked.Read(ref _prefillRunRows);
    /// <summary>Sequences run again whole when they first passed LongRoPE's switch (<see cref="DecoderModel.LongRopeSwitch"/>),
    /// and the positions those runs computed: the cost of the crossing.</summary>
    public long LongRopeReruns => Interlocked.Read(ref _longRopeReruns);
    public long LongRopeRerunPositions => Interlocked.Read(ref _longRopeRerunPositions);
    /// <summary>Requests waiting for a row (not yet prefilling).</summary>
    public int QueueLength => _policy.Count;
    /// <summary>Rows that hold a decoding sequence now. Read from any thread as a gauge.</summary>
    public int RowsInUse => _layout.LiveCount;
    /// <summary>Sequences being prefilled or decoded now (a gauge, like <see cref="RowsInUse"/>).</summary>
    public int ActiveSequences => RowsInUse + Volatile.Read(ref _prefillingCount);
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
            LongFactorKeys = _model.UsesLongFactors(promptIds.Count - 1),
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
                else if (_prefilling.Count == 0) _wake.Wait(_shutdown.Token);
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
        for (int i = _prefilling.Count - 1; i >= 0; i--)
            if (_prefilling[i] is { IsCancelled: true } prefilling) EndPrefill(prefilling, place: false, prefilling.Prefilled, null);
    }

    /// <summary>Moves waiting requests into free rows, one prefill run at a time: the next chunk of a prompt
    /// already started (alone: it runs over its own past), else new prompts side by side as the policy and
    /// the layout allow. A prompt whose tokens are all in place samples its first token and decodes in its
    /// row from then on; a partly run prompt lets the decoding rows take a step before its next chunk.</summary>
    private void Admit()
    {
        var run = _run;
        while (true)
        {
            int decoding = _layout.ActiveRows() > 0 ? RowsInUse : 0;
            int room = _policy.RunTokens(decoding);
            run.Clear();
            if (_prefilling.Count > 0)
            {
                var started = _prefilling[0];
                run.Add(new PrefillPiece(started, started.Prefilled, PrefillTokens(started, started.Prefilled, room)));
            }
            else if (!FormRun(room, run)) return;
            if (!RunPrefill(run)) continue;
            bool partly = false;
            for (int i = 0; i < run.Count; i++)
            {
                var (sequence, done, size) = run[i];
                sequence.Prefilled = done + size;
                if (sequence.Prefilled < sequence.PromptIds.Length) { partly = true; continue; }
                int total = sequence.PromptIds.Length;
                sequence.PrefillMs = sequence.Clock.Elapsed.TotalMilliseconds;
                var piece = sequence.State.Next(_layout.PrefillLogits(i), total, MaxLength);
                sequence.FirstTokenMs = sequence.SinceSubmitted.Elapsed.TotalMilliseconds;
                if (piece is not null) sequence.Emit(piece);
                bool decodes = sequence.State.StopReason is null;
                if (decodes) sequence.Clock.Restart();
                EndPrefill(sequence, place: decodes, total, null);
            }
            if (partly && decoding > 0) return; // the running rows take a step between chunks
        }
    }

    /// <summary>Takes the next waiting request and, where the layout batches prefill, the ones after it that
    /// the policy lets join: the pieces of one run from their rows' first column. False when none can start.</summary>
    private bool FormRun(int room, List<PrefillPiece> run)
    {
        BatchedSequence next;
        while (true)
        {
            if (!_layout.HasFreeRow || !_policy.TryTake(out next)) return false;
            if (!next.IsCancelled) break;
            Complete(next, null);
        }
        bool batched = _layout.BatchesPrefill && _policy.Count > 0 && _layout.TryBeginBatchedPrefill(next, run);
        int cached = batched ? 0 : _layout.BeginPrefill(next);
        Started(next, cached);
        int size = PrefillTokens(next, cached, room);
        run.Add(new PrefillPiece(next, cached, size));
        if (!batched) return true;
        int tokens = size, longest = size;
        room -= size;
        bool equalOnly = !_layout.RowsMayEndApart;
        while (room > 0 && _layout.HasFreeRow)
        {
            int joining = 0;
            if (!_policy.TryTakeIf(c => (joining = _policy.JoiningTokens(c.PromptIds.Length, run.Count, tokens, longest, room, equalOnly)) > 0
                && (!c.LongFactorKeys || joining == c.PromptIds.Length) && _layout.TryBeginBatchedPrefill(c, run), out var joiner)) break;
            if (joiner.IsCancelled) { Complete(joiner, null); continue; }
            Started(joiner, 0);
            run.Add(new PrefillPiece(joiner, 0, joining));
            (tokens, longest, room) = (tokens + joining, Math.Max(longest, joining), room - joining);
        }
        return true;
    }

    /// <summary>How many of the prompt's tokens after <paramref name="done"/> the next run holds: the policy's chunk, or all of
    /// them for a prompt past LongRoPE's switch (a chunk's run rotates with the factors its own largest position picks).</summary>
    private int PrefillTokens(BatchedSequence sequence, int done, int room)
    {
        int remaining = sequence.PromptIds.Length - done;
        return sequence.LongFactorKeys ? remaining : _policy.PrefillTokens(remaining, room);
    }

    /// <summary>An admitted request: its prefill clock starts and <paramref name="cached"/> of its prompt tokens are in place.</summary>
    private void Started(BatchedSequence sequence, int cached)
    {
        sequence.Clock.Restart();
        sequence.Prefilled = sequence.CachedPromptTokens = cached;
        Interlocked.Add(ref _reusedPrefixTokens, cached);
        _prefilling.Add(sequence);
        Volatile.Write(ref _prefillingCount, _prefilling.Count);
    }

    /// <summary>Runs one prefill run; false when it failed or was cancelled (its prompts have left).</summary>
    private bool RunPrefill(List<PrefillPiece> run)
    {
        // One prompt's run stops when that request is cancelled; a shared run only at shutdown (a cancelled
        // prompt among several leaves at the next step boundary, the others' work kept).
        var token = run.Count == 1 ? run[0].Sequence.Token : _shutdown.Token;
        try
        {
            _layout.Prefill(run, token);
        }
        catch (Exception e) when (!_shutdown.IsCancellationRequested)
        {
            bool cancelled = e is OperationCanceledException;
            foreach (var (sequence, _, _) in run) EndPrefill(sequence, place: false, cancelled ? sequence.Prefilled : 0, cancelled ? null : e);
            return false;
        }
        int tokens = 0;
        foreach (var piece in run) tokens += piece.Size;
        Interlocked.Increment(ref _prefillRuns);
        Interlocked.Add(ref _prefillRunTokens, tokens);
        Interlocked.Add(ref _prefillRunRows, run.Count);
        _options.PrefillObserver?.Invoke(new PrefillRunInfo(run.Count, tokens, run.Max(p => p.Size), RowsInUse));
        return true;
    }

    /// <summary>The prefilling request decodes in its row from now on, or leaves (finished at its first token, cancelled, failed).</summary>
    private void EndPrefill(BatchedSequence sequence, bool place, int validTokens, Exception? error)
    {
        _prefilling.Remove(sequence);
        Volatile.Write(ref _prefillingCount, _prefilling.Count);
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
        var (shortRows, longRows, waiting) = _model.LongRopeSwitch is not null ? CrossLongRopeSwitch() : (0, 0, 0);
        if (_speculation is not null && waiting == 0 && StepVerifyingDrafts()) return;
        if (waiting == 0 && (shortRows == 0 || longRows == 0))
        {
            StepSide(longFactors: null);
            return;
        }
        // One run rotates every row with the factors its largest position picks: the rows on each side of LongRoPE's
        // switch take a step of their own, the others sitting it out.
        if (shortRows > 0) StepSide(longFactors: false);
        if (longRows > 0 && _layout.ActiveRows() > 0) StepSide(longFactors: true);
    }

    /// <summary>
    /// Before a step, with LongRoPE: a row whose next position passes the switch over keys rotated with the short
    /// factors runs its whole sequence again with the long ones (once per sequence). Returns how many live rows step on
    /// each side of the switch, and how many wait (their run again could not run yet: they sit out this step).
    /// </summary>
    private (int Short, int Long, int Waiting) CrossLongRopeSwitch()
    {
        var live = _layout.Live;
        int shortRows = 0, longRows = 0, waiting = 0;
        for (int row = 0; row < live.Length; row++)
        {
            if (live[row] is not { } sequence) continue;
            if (!sequence.LongFactorKeys && _model.UsesLongFactors(sequence.Positions) && _layout.RerunWithLongFactors(row, sequence, _shutdown.Token))
            {
                sequence.LongFactorKeys = true;
                Interlocked.Increment(ref _longRopeReruns);
                Interlocked.Add(ref _longRopeRerunPositions, sequence.Positions + 1);
            }
            switch (SidesOf(sequence))
            {
                case true: longRows++; break;
                case false: shortRows++; break;
                default: waiting++; break;
            }
        }
        return (shortRows, longRows, waiting);
    }

    /// <summary>The side of LongRoPE's switch a row steps on: long when its keys are long-factor ones and its next position
    /// passes the switch; short while both are short; null (it waits) when they disagree (a rerun that could not run yet).</summary>
    private bool? SidesOf(BatchedSequence sequence)
    {
        bool next = _model.UsesLongFactors(sequence.Positions);
        return next == sequence.LongFactorKeys ? next : null;
    }

    /// <summary>One shared step for the live rows on one side of LongRoPE's switch (<paramref name="longFactors"/>; null:
    /// every live row, no switch in play); live rows on the other side sit it out.</summary>
    private void StepSide(bool? longFactors)
    {
        int rows = _layout.ActiveRows();
        _layout.PrepareStep(rows);
        int total = _layout.Width + 1;
        var ids = _step.Ids(rows, 1);
        var positions = _step.Positions(rows, 1);
        var mask = _step.Mask(rows, total);
        var live = _layout.Live;
        for (int row = 0; row < rows; row++)
        {
            if (live[row] is { } sitting && longFactors is not null && SidesOf(sitting) != longFactors)
            {
                _layout.FillSittingRow(row, mask.Slice(row * total, total), out ids[row], out positions[row]);
            }
            else _layout.FillRow(row, mask.Slice(row * total, total), out ids[row], out positions[row]);
        }
        _step.Run(rows, 1, total, _layout.Cache, cacheRow: -1, _layout.Width, _shutdown.Token, leftPadded: _layout.LeftPads);
        _layout.AfterStep(total);
        Interlocked.Increment(ref _steps);
        var logits = _step.Logits;
        for (int row = 0; row < rows; row++)
        {
            if (live[row] is not { } sequence) continue;
            if (longFactors is not null && SidesOf(sequence) != longFactors) continue;
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
        foreach (var prefilling in _prefilling) Complete(prefilling, error);
        _prefilling.Clear();
        Volatile.Write(ref _prefillingCount, 0);
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
