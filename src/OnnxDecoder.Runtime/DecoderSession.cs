using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime;

/// <summary>How a <see cref="DecoderSession"/> is opened.</summary>
public sealed record DecoderSessionOptions
{
    public ExecutionProviderOptions Providers { get; init; } = new();
    /// <summary>Sequences decoded together (rows of a left-padded batch).</summary>
    public int BatchSize { get; init; } = 1;
    /// <summary>Longest sequence (prompt + generated) the cache holds; default: the model's context.</summary>
    public int? MaxLength { get; init; }
    /// <summary>Refuse to open when the KV cache would exceed this many bytes (null: no limit).</summary>
    public long? MaxKvCacheBytes { get; init; }
    /// <summary>Prefill in chunks of at most this many tokens (0: the whole prompt at once).</summary>
    public int PrefillChunk { get; init; }
}

/// <summary>
/// One loaded decoder and the state of one batch of sequences: the ONNX Runtime session, the KV
/// cache bound through <see cref="OrtIoBinding"/>, and a preallocated logits buffer. Each call
/// appends tokens and returns the next-token logits of every row; the decode step reuses every
/// buffer. Not thread-safe: a second concurrent call is refused.
/// </summary>
public sealed class DecoderSession : IDisposable
{
    private readonly DecoderModel _model;
    private readonly bool _ownsModel;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly KvCache _cache;
    private readonly bool _fullLogits;
    private readonly LogitsBuffer _logits;         // [batch, vocab]: next-token logits of each row (float32 for sampling)
    private readonly long[] _stepIds;              // [batch, 1]
    private readonly long[] _stepPositions;        // [batch, 1]
    private readonly OrtValue _stepIdsValue, _stepPositionsValue;
    private readonly long[] _maskRows;             // [batch, max_length]: 1 real, 0 left padding
    private readonly long[] _maskScratch;          // [batch * T] contiguous copy for the current run
    private readonly int[] _nextPosition;          // per row: position id of the next real token
    private readonly OrtValue?[] _maskViews;       // [batch, T] views over _maskScratch, one per T, made on first use
    private int _busy;
    private float[]? _allPositions;                // set during AppendScoringEach: receives [T, vocab]
    private bool _stepLogitsBound, _stepInputsBound;

    /// <summary>Loads the model in <paramref name="modelFolder"/> for this session alone.</summary>
    public DecoderSession(string modelFolder, DecoderSessionOptions? options = null)
        : this(new DecoderModel(modelFolder, (options ?? new DecoderSessionOptions()).Providers), options, ownsModel: true)
    {
    }

    /// <summary>A session over a model loaded once and shared (the caller keeps owning it).</summary>
    public DecoderSession(DecoderModel model, DecoderSessionOptions? options = null) : this(model, options, ownsModel: false)
    {
    }

    private DecoderSession(DecoderModel model, DecoderSessionOptions? options, bool ownsModel)
    {
        options ??= new DecoderSessionOptions();
        _model = model;
        _ownsModel = ownsModel;
        try
        {
            Folder = model.Folder;
            Provider = model.Provider;
            BatchSize = options.BatchSize > 0 ? options.BatchSize : throw new ArgumentOutOfRangeException(nameof(options), options.BatchSize, "batch size must be positive");
            MaxLength = options.MaxLength ?? Folder.ContextLength;
            if (MaxLength <= 0 || MaxLength > Folder.ContextLength)
                throw new ArgumentOutOfRangeException(nameof(options), MaxLength, $"max length must be between 1 and the model's context length ({Folder.ContextLength})");
            PrefillChunk = options.PrefillChunk;
            long kvBytes = KvCache.BytesFor(Folder.NumLayers, BatchSize, Folder.NumKvHeads, MaxLength, Folder.HeadSize, Folder.PastPresentShareBuffer, model.KvElementType);
            if (options.MaxKvCacheBytes is { } budget && kvBytes > budget)
                throw new InvalidOperationException(
                    $"the KV cache needs {kvBytes:N0} bytes ({Folder.NumLayers} layers x 2 x batch {BatchSize} x {Folder.NumKvHeads} kv heads x {MaxLength} positions x head size {Folder.HeadSize} x {KvCache.SizeOf(model.KvElementType)} bytes{(Folder.PastPresentShareBuffer ? "" : " x 2 buffers")}), over the budget of {budget:N0}: lower the max length or the batch size");
            _fullLogits = model.FullLogits;
            _cache = new KvCache(Folder.NumLayers, BatchSize, Folder.NumKvHeads, MaxLength, Folder.HeadSize, Folder.PastPresentShareBuffer, model.KvElementType);
            _binding = model.Session.CreateIoBinding();
            _logits = new LogitsBuffer(BatchSize, Folder.VocabSize, model.LogitsElementType);
            _stepIds = new long[BatchSize];
            _stepPositions = new long[BatchSize];
            _stepIdsValue = OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(_stepIds, [BatchSize, 1]));
            _stepPositionsValue = OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(_stepPositions, [BatchSize, 1]));
            _maskRows = new long[BatchSize * MaxLength];
            _maskScratch = new long[BatchSize * MaxLength];
            _nextPosition = new int[BatchSize];
            _maskViews = new OrtValue?[MaxLength + 1];
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The loaded model this session runs.</summary>
    public DecoderModel Model => _model;
    public ModelFolder Folder { get; }
    public ExecutionProvider Provider { get; }
    public int BatchSize { get; }
    public int MaxLength { get; }
    public int PrefillChunk { get; }
    public int VocabSize => Folder.VocabSize;
    public long KvCacheBytes => _cache.TotalBytes;

    /// <summary>The cache, for moving a prefilled prompt into a batch row (<see cref="ContinuousBatcher"/>).</summary>
    internal KvCache Cache => _cache;

    /// <summary>Positions filled so far (the shared timeline of all rows, padding included).</summary>
    public int Length { get; private set; }

    /// <summary>The next-token logits of every row after the last call: [batch, vocab].</summary>
    public ReadOnlySpan<float> Logits => _logits.Values;

    /// <summary>Forgets every sequence; the buffers stay allocated for the next one.</summary>
    public void Reset()
    {
        Length = 0;
        Array.Clear(_nextPosition);
        _cache.Reset();
    }

    /// <summary>Whether <see cref="TruncateTo"/> can keep a cached prefix: one unpadded row over a
    /// shared KV buffer, where the first positions stay where they are.</summary>
    public bool CanTruncate => BatchSize == 1 && _cache.Shared;

    /// <summary>
    /// Keeps the first <paramref name="length"/> cached positions and forgets the rest, so a prompt
    /// that shares them is appended after them instead of run again (prefix reuse). Needs
    /// <see cref="CanTruncate"/> and a sequence without padding.
    /// </summary>
    public void TruncateTo(int length)
    {
        if (!CanTruncate) throw new InvalidOperationException("only a batch of one over a shared KV buffer (ort lowering) can keep a cached prefix; call Reset instead");
        if (length < 0 || length > Length) throw new ArgumentOutOfRangeException(nameof(length), length, $"the cache holds {Length} positions");
        if (length == 0) { Reset(); return; }
        Length = length;
        _nextPosition[0] = length;
    }

    /// <summary>
    /// Takes <paramref name="length"/> positions that were copied into <see cref="Cache"/> from elsewhere
    /// (a batch row holding an earlier turn of the conversation) as this sequence's cached prefix, so the
    /// next <see cref="Append"/> continues after them. Needs <see cref="CanTruncate"/>.
    /// </summary>
    internal void ResumeAt(int length)
    {
        if (!CanTruncate) throw new InvalidOperationException("only a batch of one over a shared KV buffer (ort lowering) can resume from a copied prefix");
        if (length <= 0 || length > MaxLength) throw new ArgumentOutOfRangeException(nameof(length), length, $"a prefix holds 1..{MaxLength} positions");
        _maskRows.AsSpan(0, length).Fill(1);
        _maskScratch.AsSpan(0, length).Fill(1); // a batch of one copies only new columns into the scratch mask
        Length = length;
        _nextPosition[0] = length;
    }

    /// <summary>
    /// Appends <paramref name="length"/> tokens to every row (a prompt, or more of a conversation
    /// whose earlier tokens stay cached). <paramref name="tokens"/> and <paramref name="mask"/> are
    /// [batch, length] row-major; a mask of 0 marks left padding (default: all real tokens).
    /// Returns the logits for each row's last position.
    /// </summary>
    public ReadOnlySpan<float> Append(scoped ReadOnlySpan<long> tokens, int length, scoped ReadOnlySpan<long> mask = default, CancellationToken cancellationToken = default)
    {
        if (length <= 0) throw new ArgumentOutOfRangeException(nameof(length), length, "append at least one token");
        if (tokens.Length != BatchSize * length) throw new ArgumentException($"expected {BatchSize} x {length} tokens, got {tokens.Length}", nameof(tokens));
        if (!mask.IsEmpty && mask.Length != tokens.Length) throw new ArgumentException($"mask has {mask.Length} entries, tokens {tokens.Length}", nameof(mask));
        int chunk = PrefillChunk > 0 ? PrefillChunk : length;
        for (int start = 0; start < length; start += chunk)
        {
            int size = Math.Min(chunk, length - start);
            var ids = new long[BatchSize * size];
            var chunkMask = new long[BatchSize * size];
            for (int row = 0; row < BatchSize; row++)
                for (int t = 0; t < size; t++)
                {
                    ids[row * size + t] = tokens[row * length + start + t];
                    chunkMask[row * size + t] = mask.IsEmpty ? 1 : mask[row * length + start + t];
                }
            RunChunk(ids, chunkMask, size, cancellationToken);
        }
        return _logits.Values;
    }

    /// <summary>Appends <paramref name="tokens"/> to a batch of one in one run and writes the logits of every
    /// appended position into <paramref name="logits"/> [tokens, vocab] (speculative verification).</summary>
    internal void AppendScoringEach(long[] tokens, float[] logits, CancellationToken cancellationToken)
    {
        if (BatchSize != 1 || !_fullLogits) throw new InvalidOperationException("scoring every position needs a batch of one and a graph with logits for every position");
        _allPositions = logits;
        try { RunChunk(tokens, [.. Enumerable.Repeat(1L, tokens.Length)], tokens.Length, cancellationToken); }
        finally { _allPositions = null; }
    }

    /// <summary>One decode step: appends one token per row and returns the next logits [batch, vocab].</summary>
    public ReadOnlySpan<float> Step(scoped ReadOnlySpan<long> nextTokens, CancellationToken cancellationToken = default)
    {
        if (nextTokens.Length != BatchSize) throw new ArgumentException($"expected {BatchSize} tokens, got {nextTokens.Length}", nameof(nextTokens));
        Enter();
        try
        {
            CheckRoom(1);
            for (int row = 0; row < BatchSize; row++)
            {
                CheckToken(nextTokens[row]);
                _stepIds[row] = nextTokens[row];
                _stepPositions[row] = _nextPosition[row];
                _maskRows[row * MaxLength + Length] = 1;
            }
            int total = Length + 1;
            if (!_stepInputsBound)
            {
                _binding.BindInput(GraphContract.InputIds, _stepIdsValue);
                if (_model.HasPositionIds) _binding.BindInput(GraphContract.PositionIds, _stepPositionsValue);
                _stepInputsBound = true;
            }
            _binding.BindInput(GraphContract.AttentionMask, MaskValue(total));
            if (!_stepLogitsBound)
            {
                _binding.BindOutput(GraphContract.Logits, _logits.View(BatchSize));
                _stepLogitsBound = true;
            }
            _cache.Bind(_binding, Folder, Length, total);
            Run(cancellationToken);
            _logits.Complete(BatchSize);
            _cache.Advance(total);
            Length = total;
            for (int row = 0; row < BatchSize; row++) _nextPosition[row]++;
            return _logits.Values;
        }
        finally
        {
            Exit();
        }
    }

    private void RunChunk(long[] ids, long[] mask, int size, CancellationToken cancellationToken)
    {
        Enter();
        try
        {
            CheckRoom(size);
            var positions = new long[ids.Length];
            for (int row = 0; row < BatchSize; row++)
            {
                int next = _nextPosition[row];
                for (int t = 0; t < size; t++)
                {
                    long real = mask[row * size + t];
                    if (real is not (0 or 1)) throw new ArgumentException($"mask entries must be 0 or 1, got {real}", nameof(mask));
                    CheckToken(ids[row * size + t]);
                    _maskRows[row * MaxLength + Length + t] = real;
                    positions[row * size + t] = real == 1 ? next++ : 1; // padding gets a harmless position
                }
            }
            int total = Length + size;
            using var idsValue = new OrtValueLedger.Scoped(OrtValue.CreateTensorValueFromMemory(ids, [BatchSize, size]));
            using var positionsValue = new OrtValueLedger.Scoped(OrtValue.CreateTensorValueFromMemory(positions, [BatchSize, size]));
            _binding.BindInput(GraphContract.InputIds, idsValue.Value);
            if (_model.HasPositionIds) _binding.BindInput(GraphContract.PositionIds, positionsValue.Value);
            _binding.BindInput(GraphContract.AttentionMask, MaskValue(total));
            _stepInputsBound = false;
            if (_fullLogits)
            {
                _binding.BindOutputToDevice(GraphContract.Logits, OrtMemoryInfo.DefaultInstance);
                _stepLogitsBound = false;
            }
            else if (!_stepLogitsBound)
            {
                _binding.BindOutput(GraphContract.Logits, _logits.View(BatchSize));
                _stepLogitsBound = true;
            }
            _cache.Bind(_binding, Folder, Length, total);
            Run(cancellationToken);
            if (_allPositions is not null) _logits.CopyAllPositions(_binding, size, _allPositions); // [1, size, vocab]
            else if (_fullLogits) _logits.CopyLastPositions(_binding, BatchSize, size); // [batch, size, vocab]
            else _logits.Complete(BatchSize);
            _cache.Advance(total);
            Length = total;
            for (int row = 0; row < BatchSize; row++)
                for (int t = 0; t < size; t++) _nextPosition[row] += (int)mask[row * size + t];
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>The attention mask [batch, total] for this run. The mask rows live at a fixed
    /// stride; they are copied contiguous into a scratch buffer that a cached view of that length
    /// covers, so after the first use of a length no OrtValue is created.</summary>
    private OrtValue MaskValue(int total)
    {
        if (BatchSize == 1) Array.Copy(_maskRows, Length, _maskScratch, Length, total - Length);
        else for (int row = 0; row < BatchSize; row++) Array.Copy(_maskRows, row * MaxLength, _maskScratch, row * total, total);
        return _maskViews[total] ??= OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _maskScratch.AsMemory(0, BatchSize * total), [BatchSize, total]));
    }

    private void Run(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var registration = cancellationToken.Register(static state => ((RunOptions)state!).Terminate = true, _runOptions);
        try
        {
            _model.Session.RunWithBinding(_runOptions, _binding);
        }
        catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("generation was cancelled", cancellationToken);
        }
        finally
        {
            _runOptions.Terminate = false;
        }
        cancellationToken.ThrowIfCancellationRequested();
    }

    private void CheckRoom(int tokens)
    {
        if (Length + tokens > MaxLength)
            throw new ContextFullException($"the context is full: {Length} positions used, {tokens} more requested, max length {MaxLength}");
    }

    private void CheckToken(long id)
    {
        if (id < 0 || id >= VocabSize) throw new ArgumentOutOfRangeException(nameof(id), id, $"token id {id} is outside the vocabulary (0..{VocabSize - 1})");
    }

    private void Enter()
    {
        if (Interlocked.Exchange(ref _busy, 1) == 1)
            throw new InvalidOperationException("this DecoderSession is already running: one session serves one caller at a time; open one per concurrent sequence");
    }

    private void Exit() => Volatile.Write(ref _busy, 0);

    public void Dispose()
    {
        _binding?.Dispose();
        if (_maskViews is not null) foreach (var view in _maskViews) OrtValueLedger.Release(view);
        _logits?.Dispose();
        OrtValueLedger.Release(_stepIdsValue);
        OrtValueLedger.Release(_stepPositionsValue);
        _cache?.Dispose();
        if (_ownsModel) _model?.Dispose();
        _runOptions.Dispose();
    }
}

/// <summary>Records, when disposed, that ONNX Runtime's output values of a run were released.</summary>
internal readonly struct LedgerRelease(int count) : IDisposable
{
    public void Dispose() => OrtValueLedger.TrackDisposed(count);
}

/// <summary>The sequence reached the session's max length.</summary>
public sealed class ContextFullException(string message) : InvalidOperationException(message);
