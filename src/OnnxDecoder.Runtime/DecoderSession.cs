using OnnxDecoder.Runtime.Memory;

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
/// One loaded decoder and the state of one batch of sequences: the KV cache (allocated once through
/// the session's allocator, on the device under CUDA or DirectML) and a <see cref="BoundRunStep"/>
/// that binds it with the host inputs and the logits buffer. Each call appends tokens and returns the
/// next-token logits of every row; the decode step reuses every buffer and view. Not thread-safe: a
/// second concurrent call is refused.
/// </summary>
public sealed class DecoderSession : IDisposable
{
    private readonly DecoderModel _model;
    private readonly bool _ownsModel;
    private readonly KvCache _cache;
    private readonly BoundRunStep _step;
    private readonly long[] _maskRows;             // [batch, max_length]: 1 real, 0 left padding
    private readonly int[] _nextPosition;          // per row: position id of the next real token
    private bool _padded;                          // a 0 was written into the mask since the last Reset
    private readonly long[]? _idRows;              // [batch, max_length]: every cached id (LongRoPE graphs: a re-run needs them)
    private bool _longKeys;                        // the cached keys were rotated with LongRoPE's long factors
    private int _busy;

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
            _cache = model.CreateKvCache(BatchSize, MaxLength);
            _step = new BoundRunStep(model, BatchSize, MaxLength, MaxLength);
            _maskRows = new long[BatchSize * MaxLength];
            _nextPosition = new int[BatchSize];
            if (model.LongRopeSwitch is not null) _idRows = new long[BatchSize * MaxLength];
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
    /// <summary>Where the KV cache lives and the views and copies it has made.</summary>
    public KvCacheStatistics KvStatistics => _cache.Statistics;

    /// <summary>The cache, for moving a prefilled prompt into a batch row (<see cref="ContinuousBatcher"/>).</summary>
    internal KvCache Cache => _cache;

    /// <summary>Positions filled so far (the shared timeline of all rows, padding included).</summary>
    public int Length { get; private set; }

    /// <summary>The next-token logits of every row after the last call: [batch, vocab].</summary>
    public ReadOnlySpan<float> Logits => _step.Logits;

    /// <summary>Wall time of ONNX Runtime's run in the last call (the last chunk of an <see cref="Append"/>):
    /// the rest of a <see cref="Step"/>'s time is this host's (ids, positions, mask, binding, the logits view).</summary>
    public TimeSpan LastRunTime => _step.LastRunTime;

    /// <summary>Runs that re-ran every cached position because the cached keys lay on the other side of LongRoPE's
    /// switch than the run reading them (<see cref="DecoderModel.LongRopeSwitch"/>), and the cached positions they re-ran.</summary>
    public int LongRopeReruns { get; private set; }
    public long LongRopeRerunPositions { get; private set; }

    /// <summary>The cached keys were rotated with LongRoPE's long factors (a later run on the short side runs them again).</summary>
    internal bool LongFactorKeys => _longKeys;

    /// <summary>Forgets every sequence; the buffers stay allocated for the next one.</summary>
    public void Reset()
    {
        Length = 0;
        _padded = false;
        _longKeys = false;
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
        Enter();
        try
        {
            if (_model.LongRopeSwitch is not null)
            {
                bool longFactors = _model.UsesLongFactors(LongestPositionAfter(tokens, length, mask));
                if (Length > 0 && longFactors != _longKeys) return Rerun(tokens, length, mask, allPositions: null, cancellationToken);
                // A chunk's factors follow its own positions: a prompt that ends past the switch runs in one run.
                var logits = AppendChunks(tokens, length, mask, longFactors ? length : PrefillChunk > 0 ? PrefillChunk : length, cancellationToken);
                _longKeys = longFactors;
                return logits;
            }
            return AppendChunks(tokens, length, mask, PrefillChunk > 0 ? PrefillChunk : length, cancellationToken);
        }
        finally
        {
            Exit();
        }
    }

    private ReadOnlySpan<float> AppendChunks(scoped ReadOnlySpan<long> tokens, int length, scoped ReadOnlySpan<long> mask, int chunk, CancellationToken cancellationToken)
    {
        for (int start = 0; start < length; start += chunk)
        {
            int size = Math.Min(chunk, length - start);
            CheckRoom(size);
            var ids = _step.Ids(BatchSize, size);
            var positions = _step.Positions(BatchSize, size);
            for (int row = 0; row < BatchSize; row++)
            {
                int next = _nextPosition[row];
                for (int t = 0; t < size; t++)
                {
                    long id = tokens[row * length + start + t], real = mask.IsEmpty ? 1 : mask[row * length + start + t];
                    if (real is not (0 or 1)) throw new ArgumentException($"mask entries must be 0 or 1, got {real}", nameof(mask));
                    _padded |= real == 0;
                    CheckToken(id);
                    ids[row * size + t] = id;
                    _maskRows[row * MaxLength + Length + t] = real;
                    if (_idRows is not null) _idRows[row * MaxLength + Length + t] = id;
                    positions[row * size + t] = real == 1 ? next++ : 1; // padding gets a harmless position
                }
            }
            RunAndAdvance(size, cancellationToken);
            for (int row = 0; row < BatchSize; row++)
                for (int t = 0; t < size; t++) _nextPosition[row] += (int)_maskRows[row * MaxLength + Length - size + t];
        }
        return _step.Logits;
    }

    /// <summary>The largest position id a run of <paramref name="length"/> more tokens per row gives (padding rides at 1).</summary>
    private int LongestPositionAfter(ReadOnlySpan<long> tokens, int length, ReadOnlySpan<long> mask)
    {
        int longest = 0;
        for (int row = 0; row < BatchSize; row++)
        {
            int real = length;
            if (!mask.IsEmpty)
            {
                real = 0;
                for (int t = 0; t < length; t++) real += mask[row * length + t] == 1 ? 1 : 0;
            }
            longest = Math.Max(longest, real < length ? Math.Max(1, _nextPosition[row] + real - 1) : _nextPosition[row] + real - 1);
        }
        return longest;
    }

    /// <summary>
    /// The cached keys were rotated with the other LongRoPE factors than a run over these tokens uses: every cached
    /// column runs again, with <paramref name="tokens"/> after it, in one run from position 0 (transformers' Phi-3 drops
    /// its cache and re-runs the whole sequence once, when a generation first passes the switch). The logits are the
    /// appended tokens' own; <paramref name="allPositions"/>, when given, receives those of every appended position.
    /// </summary>
    private ReadOnlySpan<float> Rerun(scoped ReadOnlySpan<long> tokens, int length, scoped ReadOnlySpan<long> mask, float[]? allPositions,
        CancellationToken cancellationToken)
    {
        CheckRoom(length);
        int cached = Length, total = cached + length;
        var ids = new long[BatchSize * total];
        var realMask = new long[BatchSize * total];
        for (int row = 0; row < BatchSize; row++)
        {
            _idRows!.AsSpan(row * MaxLength, cached).CopyTo(ids.AsSpan(row * total));
            _maskRows.AsSpan(row * MaxLength, cached).CopyTo(realMask.AsSpan(row * total));
            tokens.Slice(row * length, length).CopyTo(ids.AsSpan(row * total + cached));
            if (mask.IsEmpty) realMask.AsSpan(row * total + cached, length).Fill(1);
            else mask.Slice(row * length, length).CopyTo(realMask.AsSpan(row * total + cached));
        }
        LongRopeReruns++;
        LongRopeRerunPositions += cached;
        Reset();
        if (allPositions is null)
        {
            _longKeys = _model.UsesLongFactors(LongestPositionAfter(ids, total, realMask));
            return AppendChunks(ids, total, realMask, total, cancellationToken);
        }
        // Speculative verification (a batch of one, no padding): every position's logits, the appended ones kept.
        var every = new float[total * VocabSize];
        CheckRoom(total);
        var runIds = _step.Ids(1, total);
        var positions = _step.Positions(1, total);
        for (int t = 0; t < total; t++)
        {
            runIds[t] = _idRows![t] = ids[t];
            positions[t] = t;
            _maskRows[t] = 1;
        }
        _longKeys = _model.UsesLongFactors(total - 1);
        RunAndAdvance(total, cancellationToken, every);
        _nextPosition[0] = total;
        every.AsSpan(cached * VocabSize, length * VocabSize).CopyTo(allPositions);
        return _step.Logits;
    }

    /// <summary>Appends <paramref name="tokens"/> to a batch of one in one run and writes the logits of every
    /// appended position into <paramref name="logits"/> [tokens, vocab] (speculative verification).</summary>
    internal void AppendScoringEach(long[] tokens, float[] logits, CancellationToken cancellationToken)
    {
        if (BatchSize != 1) throw new InvalidOperationException("scoring every position needs a batch of one");
        if (tokens.Length == 0) throw new ArgumentException("append at least one token", nameof(tokens));
        Enter();
        try
        {
            if (_model.LongRopeSwitch is not null)
            {
                bool longFactors = _model.UsesLongFactors(_nextPosition[0] + tokens.Length - 1);
                if (Length > 0 && longFactors != _longKeys && !_padded)
                {
                    Rerun(tokens, tokens.Length, default, logits, cancellationToken);
                    return;
                }
                _longKeys = longFactors;
            }
            CheckRoom(tokens.Length);
            var ids = _step.Ids(1, tokens.Length);
            var positions = _step.Positions(1, tokens.Length);
            for (int t = 0; t < tokens.Length; t++)
            {
                CheckToken(tokens[t]);
                ids[t] = tokens[t];
                if (_idRows is not null) _idRows[Length + t] = tokens[t];
                positions[t] = _nextPosition[0] + t;
                _maskRows[Length + t] = 1;
            }
            RunAndAdvance(tokens.Length, cancellationToken, logits);
            _nextPosition[0] += tokens.Length;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>One decode step: appends one token per row and returns the next logits [batch, vocab].</summary>
    public ReadOnlySpan<float> Step(scoped ReadOnlySpan<long> nextTokens, CancellationToken cancellationToken = default)
    {
        if (nextTokens.Length != BatchSize) throw new ArgumentException($"expected {BatchSize} tokens, got {nextTokens.Length}", nameof(nextTokens));
        Enter();
        try
        {
            if (_model.LongRopeSwitch is not null)
            {
                int longest = 0;
                foreach (int next in _nextPosition) longest = Math.Max(longest, next);
                bool longFactors = _model.UsesLongFactors(longest);
                if (Length > 0 && longFactors != _longKeys) return Rerun(nextTokens, 1, default, allPositions: null, cancellationToken);
                _longKeys = longFactors;
            }
            CheckRoom(1);
            var ids = _step.Ids(BatchSize, 1);
            var positions = _step.Positions(BatchSize, 1);
            for (int row = 0; row < BatchSize; row++)
            {
                CheckToken(nextTokens[row]);
                ids[row] = nextTokens[row];
                if (_idRows is not null) _idRows[row * MaxLength + Length] = nextTokens[row];
                positions[row] = _nextPosition[row];
                _maskRows[row * MaxLength + Length] = 1;
            }
            RunAndAdvance(1, cancellationToken);
            for (int row = 0; row < BatchSize; row++) _nextPosition[row]++;
            return _step.Logits;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Runs <paramref name="size"/> new positions of every row whose ids and positions are in the step,
    /// with the mask rows [batch, Length + size] copied contiguous into it.</summary>
    private void RunAndAdvance(int size, CancellationToken cancellationToken, float[]? allPositions = null)
    {
        int total = Length + size;
        var mask = _step.Mask(BatchSize, total);
        // A batch of one keeps earlier columns in the step's mask (only ones are ever written there).
        if (BatchSize == 1) _maskRows.AsSpan(Length, size).CopyTo(mask[Length..]);
        else for (int row = 0; row < BatchSize; row++) _maskRows.AsSpan(row * MaxLength, total).CopyTo(mask.Slice(row * total, total));
        _step.Run(BatchSize, size, total, _cache, cacheRow: -1, Length, cancellationToken, allPositions, leftPadded: _padded);
        Length = total;
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
        _step?.Dispose();
        _cache?.Dispose();
        if (_ownsModel) _model?.Dispose();
    }
}

/// <summary>The sequence reached the session's max length.</summary>
public sealed class ContextFullException(string message) : InvalidOperationException(message);
