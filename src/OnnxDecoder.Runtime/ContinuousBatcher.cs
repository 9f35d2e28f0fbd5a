using System.Diagnostics;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime;

/// <summary>How a <see cref="ContinuousBatcher"/> is sized.</summary>
public sealed record BatcherOptions
{
    /// <summary>Sequences decoded together: rows of the batch, each with its own row of the KV cache.</summary>
    public int MaxSequences { get; init; } = 8;
    /// <summary>Requests that may wait for a free row before new ones are refused.</summary>
    public int MaxQueueLength { get; init; } = 64;
    /// <summary>Positions of the shared timeline (and so the longest sequence); default: the model's context.</summary>
    public int? MaxLength { get; init; }
    /// <summary>Prefill a new prompt in chunks of at most this many tokens, with a decode step of the
    /// running sequences between chunks (0: the whole prompt in one run).</summary>
    public int PrefillChunk { get; init; }
    /// <summary>Refuse to start when the KV caches would exceed this many bytes (null: no limit).</summary>
    public long? MaxKvCacheBytes { get; init; }
}

/// <summary>Every row is busy and the wait queue is full: retry later (HTTP 429/503).</summary>
public sealed class QueueFullException(string message) : InvalidOperationException(message);

/// <summary>
/// Continuous batching over one loaded model. Requests wait in a bounded queue; each admitted
/// request is prefilled alone, its prompt's keys and values are moved once into a free row of a
/// batch KV cache, and from then on one ONNX Runtime run decodes one token for every active row.
/// A new request joins between two steps; a finished, cancelled or abandoned request leaves its row
/// at the next step boundary.
/// <para>
/// With the ort lowering (GroupQueryAttention over a shared KV buffer, lengths taken per row from
/// the mask) every row keeps its own length: its tokens start at column 0 of its cache row, its mask
/// row has ones over its own tokens only, and each run's mask is as wide as the longest row. Nothing
/// is ever moved, and attention covers each row's own keys.
/// </para>
/// <para>
/// Otherwise (portable lowering, whose Concat appends every row at the same column) rows share a
/// timeline of positions: a row's tokens end at the current column, with left padding before them,
/// and each row keeps its own position ids. A prompt longer than the timeline shifts the running rows
/// right; a timeline that reaches the max length is compacted to the longest live row. Those moves
/// copy KV memory, rarely.
/// </para>
/// <para>
/// Prefix cache (own lengths only): a finished request's keys and values stay in its row, with the
/// tokens they hold, until the row is needed again (the least recently finished row goes first). A new
/// prompt starts from the longest prefix it shares with any cached row or with the last prompt run
/// through the prefill session, so the next turn of a conversation or a shared system prompt is not
/// run again. A cached row under the highest live row rides along in each step with a pad token
/// written just past its tokens, so its cache survives. On the shared timeline only the last prompt
/// is reused: relayouts and compactions move live rows only.
/// </para>
/// One scheduler thread owns the session, the cache and every row; callers only enqueue and read.
/// </summary>
public sealed class ContinuousBatcher : IDisposable
{
    private readonly DecoderModel _model;
    private readonly TextTokenizer _tokenizer;
    private readonly BatcherOptions _options;
    private readonly DecoderSession _prefill;          // batch of one: prompts run here, then move into a row
    private readonly KvCache _cache;                   // [rows, kv_heads, max_length, head_dim] per layer and kind
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly int _rowsCapacity, _vocab;
    private readonly LogitsBuffer _logits;             // [rows, vocab]
    private readonly long[] _stepIds, _stepPositions;  // [rows]
    private readonly long[] _mask;                     // [rows, T] for the current run
    private readonly OrtValue?[] _idsViews, _positionViews; // per row count, made on first use
    private readonly BatchedSequence?[] _rows;         // the sequence decoding in each row
    private readonly int[] _rowStart;                  // first column of each row's tokens on the timeline
    private readonly int[] _rowLength, _rowStartScratch; // scratch for relayouts
    private readonly ConcurrentQueue<BatchedSequence> _queue = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _shutdown = new();
    private readonly Thread _scheduler;
    private BatchedSequence? _prefilling;             // admitted, its prompt partly run through _prefill
    private readonly bool _ownLengths;                 // rows keep their own lengths (see the class remarks)
    private int _length;                              // columns of the timeline in use (shared timeline only)
    private int _outstanding;                         // queued + prefilling + decoding
    private long _steps, _rowSteps, _compactions, _stepTicks, _reusedPrefixTokens;
    private readonly List<int> _prefillTokens = [];  // the tokens whose KV the prefill session holds
    private readonly RowPrefixCache _rowCache;         // tokens whose KV free rows still hold (own lengths only)
    private int _prefillRow = -1;                      // the row reserved for the prefilling request

    public ContinuousBatcher(DecoderModel model, TextTokenizer tokenizer, BatcherOptions? options = null)
    {
        _model = model;
        _tokenizer = tokenizer;
        _options = options ?? new BatcherOptions();
        var folder = model.Folder;
        _rowsCapacity = _options.MaxSequences is > 0 and <= 4096 ? _options.MaxSequences : throw new ArgumentOutOfRangeException(nameof(options), _options.MaxSequences, "MaxSequences must be between 1 and 4096");
        if (_options.MaxQueueLength < 0) throw new ArgumentOutOfRangeException(nameof(options), _options.MaxQueueLength, "MaxQueueLength must not be negative");
        if (_options.PrefillChunk < 0) throw new ArgumentOutOfRangeException(nameof(options), _options.PrefillChunk, "PrefillChunk must not be negative");
        MaxLength = _options.MaxLength ?? folder.ContextLength;
        if (MaxLength <= 1 || MaxLength > folder.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(options), MaxLength, $"MaxLength must be between 2 and the model's context length ({folder.ContextLength})");
        long bytes = KvCache.BytesFor(folder.NumLayers, _rowsCapacity + 1, folder.NumKvHeads, MaxLength, folder.HeadSize, folder.PastPresentShareBuffer, model.KvElementType);
        if (_options.MaxKvCacheBytes is { } budget && bytes > budget)
            throw new InvalidOperationException($"the KV caches need {bytes:N0} bytes ({_rowsCapacity} rows + 1 prefill row x {MaxLength} positions), over the budget of {budget:N0}: lower MaxSequences or MaxLength");
        _vocab = folder.VocabSize;
        _ownLengths = model.RowsKeepOwnLengths;
        try
        {
            _prefill = new DecoderSession(model, new DecoderSessionOptions { MaxLength = MaxLength, PrefillChunk = 0 });
            _cache = new KvCache(folder.NumLayers, _rowsCapacity, folder.NumKvHeads, MaxLength, folder.HeadSize, folder.PastPresentShareBuffer, model.KvElementType);
            _binding = model.Session.CreateIoBinding();
            _logits = new LogitsBuffer(_rowsCapacity, _vocab, model.LogitsElementType);
            _stepIds = new long[_rowsCapacity];
            _stepPositions = new long[_rowsCapacity];
            _mask = new long[_rowsCapacity * MaxLength];
            _idsViews = new OrtValue?[_rowsCapacity + 1];
            _positionViews = new OrtValue?[_rowsCapacity + 1];
            _rows = new BatchedSequence?[_rowsCapacity];
            _rowStart = new int[_rowsCapacity];
            _rowLength = new int[_rowsCapacity];
            _rowStartScratch = new int[_rowsCapacity];
            _rowCache = new RowPrefixCache(_rowsCapacity);
        }
        catch
        {
            DisposeNative();
            throw;
        }
        _scheduler = new Thread(Schedule) { IsBackground = true, Name = "OnnxDecoder batch scheduler" };
        _scheduler.Start();
    }

    public DecoderModel Model => _model;
    public TextTokenizer Tokenizer => _tokenizer;
    public int MaxSequences => _rowsCapacity;
    public int MaxLength { get; }
    public long KvCacheBytes => _cache.TotalBytes + _prefill.KvCacheBytes;
    /// <summary>Requests submitted and not finished (queued, prefilling or decoding).</summary>
    public int Outstanding => Volatile.Read(ref _outstanding);
    /// <summary>Batched decode runs so far.</summary>
    public long Steps => Interlocked.Read(ref _steps);
    /// <summary>Tokens those runs decoded (rows that held a sequence); over <see cref="Steps"/>, the mean batch occupancy.</summary>
    public long RowSteps => Interlocked.Read(ref _rowSteps);
    /// <summary>Time spent in batched decode runs (sampling included); <see cref="RowSteps"/> over it is the aggregate decode rate.</summary>
    public TimeSpan DecodeTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _stepTicks));
    /// <summary>Prompt tokens not run again because a cached row or the previous prompt began with them
    /// (a shared system prompt, or the earlier turns of a conversation).</summary>
    public long ReusedPrefixTokens => Interlocked.Read(ref _reusedPrefixTokens);
    /// <summary>Requests waiting for a row (not yet prefilling).</summary>
    public int QueueLength => _queue.Count;
    /// <summary>Rows of the batch KV cache that hold a decoding sequence now. Read from any thread as a
    /// gauge: the scheduler may change it in the next step.</summary>
    public int RowsInUse
    {
        get
        {
            int used = 0;
            foreach (var row in _rows) if (row is not null) used++; // reference reads are atomic; a stale one is fine for a gauge
            return used;
        }
    }
    /// <summary>Sequences being prefilled or decoded now (a gauge, like <see cref="RowsInUse"/>).</summary>
    public int ActiveSequences => RowsInUse + (Volatile.Read(ref _prefilling) is null ? 0 : 1);
    /// <summary>Free rows that still hold a finished sequence's KV for a later prompt to start from (a gauge).</summary>
    public int CachedRows => _rowCache.Count;
    /// <summary>Times the timeline reached the max length and was compacted (each moves the live KV once).</summary>
    public long Compactions => Interlocked.Read(ref _compactions);

    /// <summary>
    /// Queues a generation after <paramref name="promptIds"/> (BOS included). Throws at once for a
    /// request that cannot run (<see cref="QueueFullException"/>, <see cref="ContextFullException"/>,
    /// invalid options); otherwise the returned sequence streams its tokens. Cancelling
    /// <paramref name="cancellationToken"/> or disposing the sequence frees its row within one step.
    /// </summary>
    public BatchedSequence Submit(IReadOnlyList<int> promptIds, GenerationOptions options, CancellationToken cancellationToken = default)
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
        var sequence = new BatchedSequence(this, [.. promptIds], state, cancellationToken);
        _queue.Enqueue(sequence);
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
                bool decoding = Array.Exists(_rows, r => r is not null);
                if (decoding) Step();
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
        while (_queue.TryDequeue(out var queued)) Complete(queued, closed);
    }

    private void DropCancelled()
    {
        for (int row = 0; row < _rows.Length; row++)
            if (_rows[row] is { IsCancelled: true } sequence)
            {
                Release(row, sequence);
                Complete(sequence, null);
            }
        if (_prefilling is { IsCancelled: true } prefilling)
        {
            _prefilling = null;
            _prefillRow = -1;
            Complete(prefilling, null);
        }
    }

    /// <summary>Moves queued requests into free rows: runs (a chunk of) one prompt, and once a
    /// prompt is whole, places its cache into its row and samples its first token.</summary>
    private void Admit()
    {
        while (true)
        {
            if (_prefilling is null)
            {
                if (Array.IndexOf(_rows, null) < 0 || !_queue.TryDequeue(out var next)) return;
                if (next.IsCancelled) { Complete(next, null); continue; }
                _prefilling = next;
                next.CachedPromptTokens = ReusePrefix(next.PromptIds);
                _prefillRow = _rowCache.Take(next.PromptIds, _rows);
                next.Clock.Restart();
            }
            var sequence = _prefilling;
            int total = sequence.PromptIds.Length, done = _prefillTokens.Count; // the prefill cache holds the prompt's first `done` tokens
            int size = _options.PrefillChunk > 0 ? Math.Min(_options.PrefillChunk, total - done) : total - done;
            var ids = new long[size];
            for (int i = 0; i < size; i++) ids[i] = sequence.PromptIds[done + i];
            ReadOnlySpan<float> logits;
            try
            {
                logits = _prefill.Append(ids, size, cancellationToken: sequence.Token);
            }
            catch (Exception e)
            {
                _prefilling = null;
                _prefillRow = -1;
                _prefill.Reset();
                _prefillTokens.Clear();
                Complete(sequence, e is OperationCanceledException ? null : e);
                continue;
            }
            _prefillTokens.AddRange(sequence.PromptIds.AsSpan(done, size));
            if (done + size < total)
            {
                if (Array.Exists(_rows, r => r is not null)) return; // let the running rows take a step between chunks
                continue;
            }
            _prefilling = null;
            sequence.PrefillMs = sequence.Clock.Elapsed.TotalMilliseconds;
            var piece = sequence.State.Next(logits, total, MaxLength);
            sequence.FirstTokenMs = sequence.SinceSubmitted.Elapsed.TotalMilliseconds;
            if (piece is not null) sequence.Emit(piece);
            if (sequence.State.StopReason is not null) { _prefillRow = -1; Complete(sequence, null); continue; }
            Place(sequence, _prefillRow); // reserved at admission: only this request takes a row
            _prefillRow = -1;
        }
    }

    /// <summary>
    /// Leaves the prefill session holding the longest prefix of <paramref name="prompt"/> found in it or in
    /// a cached row (copied from the row into the prefill cache; at least one prompt token is always run,
    /// for its logits); <see cref="_prefillTokens"/> is left holding it. Returns how many prompt tokens were kept.
    /// </summary>
    private int ReusePrefix(int[] prompt)
    {
        int limit = prompt.Length - 1;
        int common = _prefill.CanTruncate ? RowPrefixCache.CommonPrefix(_prefillTokens, prompt, limit) : 0;
        var (bestRow, fromRow) = _ownLengths && _prefill.CanTruncate ? _rowCache.Longest(prompt, limit, _rows) : (-1, 0);
        if (fromRow > common)
        {
            _prefill.Reset();
            _prefill.Cache.CopySegment(_cache, MaxLength, bestRow, 0, fromRow, MaxLength, 0, 0);
            _prefill.ResumeAt(fromRow);
            _rowCache.Touch(bestRow);
            _prefillTokens.Clear();
            _prefillTokens.AddRange(prompt.AsSpan(0, fromRow));
            Interlocked.Add(ref _reusedPrefixTokens, fromRow);
            return fromRow;
        }
        if (common == 0) _prefill.Reset();
        else _prefill.TruncateTo(common);
        _prefillTokens.RemoveRange(common, _prefillTokens.Count - common);
        Interlocked.Add(ref _reusedPrefixTokens, common);
        return common;
    }

    /// <summary>A sequence leaves its row; with own lengths the row keeps its KV for the prefix cache: the
    /// prompt and every token fed back (the last sampled token never ran).</summary>
    private void Release(int row, BatchedSequence sequence)
    {
        _rows[row] = null;
        if (!_ownLengths) return;
        var generated = sequence.State.Generated;
        int fed = Math.Min(sequence.DecodedSteps, generated.Count);
        var tokens = new int[sequence.PromptIds.Length + fed];
        sequence.PromptIds.CopyTo(tokens, 0);
        generated.CopyTo(0, tokens, sequence.PromptIds.Length, fed);
        _rowCache.Keep(row, tokens);
    }

    /// <summary>Copies the prefilled prompt into <paramref name="row"/>: from column 0 when rows keep
    /// their own lengths, else so that it ends at the timeline's current column.</summary>
    private void Place(BatchedSequence sequence, int row)
    {
        int count = sequence.PromptIds.Length, start = 0;
        if (!_ownLengths)
        {
            int rows = ActiveRows();
            if (rows == 0) Relayout(0, count);            // an empty batch starts a fresh timeline
            else if (count > _length) Relayout(rows, count); // shift the running rows right to make room
            start = _length - count;
        }
        _cache.CopySegment(_prefill.Cache, count, 0, 0, count, _ownLengths ? MaxLength : _length, row, start);
        _rowStart[row] = start;
        sequence.Clock.Restart();
        _rows[row] = sequence;
    }

    /// <summary>Moves every live row so that it ends at column <paramref name="newLength"/>.</summary>
    private void Relayout(int rows, int newLength)
    {
        for (int row = 0; row < rows; row++)
        {
            _rowLength[row] = _rows[row] is null ? 0 : _length - _rowStart[row];
            _rowStartScratch[row] = _rows[row] is null ? 0 : _rowStart[row];
        }
        _cache.Relayout(rows, _rowStartScratch.AsSpan(0, rows), _rowLength.AsSpan(0, rows), _length, newLength);
        for (int row = 0; row < rows; row++)
            if (_rows[row] is not null) _rowStart[row] = newLength - _rowLength[row];
        _length = newLength;
    }

    /// <summary>One past the highest row that holds a sequence: the batch size of the next run.</summary>
    private int ActiveRows()
    {
        for (int row = _rows.Length - 1; row >= 0; row--)
            if (_rows[row] is not null) return row + 1;
        return 0;
    }

    /// <summary>One batched decode run: a token for every active row; empty rows below the highest
    /// active one ride along with a pad token that attends only to itself.</summary>
    private void Step()
    {
        long started = Stopwatch.GetTimestamp();
        try
        {
            StepRows();
        }
        finally
        {
            Interlocked.Add(ref _stepTicks, Stopwatch.GetTimestamp() - started);
        }
    }

    private void StepRows()
    {
        int rows = ActiveRows();
        if (_ownLengths)
        {
            // Each row's mask covers its own tokens plus the new one; the run is as wide as the longest,
            // cached rows riding along included.
            _length = 0;
            for (int row = 0; row < rows; row++)
                if (_rows[row] is { } active) _length = Math.Max(_length, active.Positions);
                else if (_rowCache.TokensOf(row) is { } cached) _length = Math.Max(_length, RideAlongColumn(cached));
        }
        else if (_length + 1 > MaxLength)
        {
            int longest = 0;
            for (int row = 0; row < rows; row++)
                if (_rows[row] is not null) longest = Math.Max(longest, _length - _rowStart[row]);
            Relayout(rows, longest);
            Interlocked.Increment(ref _compactions);
        }
        int total = _length + 1;
        var folder = _model.Folder;
        for (int row = 0; row < rows; row++)
        {
            var mask = _mask.AsSpan(row * total, total);
            if (_rows[row] is { } sequence)
            {
                _stepIds[row] = sequence.State.Generated[^1];
                _stepPositions[row] = sequence.Positions;
                if (_ownLengths)
                {
                    mask[..(sequence.Positions + 1)].Fill(1);
                    mask[(sequence.Positions + 1)..].Clear();
                }
                else
                {
                    mask[.._rowStart[row]].Clear();
                    mask[_rowStart[row]..].Fill(1);
                }
            }
            else if (_ownLengths && _rowCache.TokensOf(row) is { } cached)
            {
                // A cached row's pad token goes just past its tokens, so their keys and values stay.
                int column = RideAlongColumn(cached);
                _stepIds[row] = folder.PadTokenId;
                _stepPositions[row] = column;
                mask[..(column + 1)].Fill(1);
                mask[(column + 1)..].Clear();
                _rowCache.TruncateTo(row, column); // a full row gives up its last position
            }
            else
            {
                // An empty row rides along with a pad token that attends only to itself.
                _stepIds[row] = folder.PadTokenId;
                _stepPositions[row] = 0;
                mask.Clear();
                mask[_ownLengths ? 0 : ^1] = 1;
            }
        }
        using var maskValue = new OrtValueLedger.Scoped(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _mask.AsMemory(0, rows * total), [rows, total]));
        _binding.BindInput(GraphContract.InputIds, _idsViews[rows] ??= OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _stepIds.AsMemory(0, rows), [rows, 1])));
        if (_model.HasPositionIds) _binding.BindInput(GraphContract.PositionIds, _positionViews[rows] ??= OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _stepPositions.AsMemory(0, rows), [rows, 1])));
        _binding.BindInput(GraphContract.AttentionMask, maskValue.Value);
        if (_model.FullLogits)
            _binding.BindOutputToDevice(GraphContract.Logits, OrtMemoryInfo.DefaultInstance);
        else
            _binding.BindOutput(GraphContract.Logits, _logits.View(rows));
        _cache.Bind(_binding, folder, _length, total, rows);
        using (var registration = _shutdown.Token.Register(static state => ((RunOptions)state!).Terminate = true, _runOptions))
            _model.Session.RunWithBinding(_runOptions, _binding);
        if (_model.FullLogits) _logits.CopyLastPositions(_binding, rows, 1); // [rows, 1, vocab]
        else _logits.Complete(rows);
        _cache.Advance(total);
        _length = total;
        Interlocked.Increment(ref _steps);
        for (int row = 0; row < rows; row++)
        {
            if (_rows[row] is not { } sequence) continue;
            Interlocked.Increment(ref _rowSteps);
            sequence.DecodedSteps++;
            var piece = sequence.State.Next(_logits.Values.AsSpan(row * _vocab, _vocab), sequence.Positions, MaxLength);
            if (piece is not null) sequence.Emit(piece);
            if (sequence.State.StopReason is not null)
            {
                Release(row, sequence);
                Complete(sequence, null);
            }
        }
    }

    /// <summary>The column a cached row's ride-along pad token writes: just past its tokens, or over its
    /// last position when the row is full.</summary>
    private int RideAlongColumn(int[] cached) => Math.Min(cached.Length, MaxLength - 1);

    private void FailAll(Exception error)
    {
        for (int row = 0; row < _rows.Length; row++)
            if (_rows[row] is { } sequence)
            {
                _rows[row] = null;
                Complete(sequence, error);
            }
        if (_prefilling is { } prefilling)
        {
            _prefilling = null;
            Complete(prefilling, error);
        }
        _length = 0;
        _prefillRow = -1;
        _rowCache.Clear(); // a failed run leaves every row's KV undefined
        _cache.Reset();
        _prefill.Reset();
        _prefillTokens.Clear();
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
        DisposeNative();
        _shutdown.Dispose();
        _wake.Dispose();
    }

    private void DisposeNative()
    {
        _binding?.Dispose();
        _logits?.Dispose();
        foreach (var views in new[] { _idsViews, _positionViews })
            if (views is not null) foreach (var view in views) OrtValueLedger.Release(view);
        _cache?.Dispose();
        _prefill?.Dispose();
        _runOptions.Dispose();
    }
}

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

    internal BatchedSequence(ContinuousBatcher owner, int[] promptIds, GenerationState state, CancellationToken cancellationToken)
    {
        _owner = owner;
        PromptIds = promptIds;
        State = state;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _wakeOnCancel = _cancel.Token.Register(static o => { var s = (BatchedSequence)o!; s._owner.OnCancelled(s); }, this);
    }

    internal int[] PromptIds { get; }
    internal GenerationState State { get; }
    internal CancellationToken Token => _cancel.Token;
    internal bool IsCancelled => _cancel.IsCancellationRequested;
    internal Stopwatch Clock { get; } = new();
    internal Stopwatch SinceSubmitted { get; } = Stopwatch.StartNew();
    /// <summary>Positions the sequence holds in the cache: its prompt and every decoded token.</summary>
    internal int Positions => PromptIds.Length + DecodedSteps;
    internal int DecodedSteps { get; set; }
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
            _completion.TrySetResult(new GenerationResult(PromptIds, [.. State.Generated], State.Text, reason, timings));
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
