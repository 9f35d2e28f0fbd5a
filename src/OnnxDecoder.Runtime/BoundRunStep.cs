using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime;

/// <summary>
/// One ONNX Runtime run over an IO binding for N rows of T new tokens each, shared by
/// <see cref="DecoderSession"/> and <see cref="ContinuousBatcher"/>. The caller writes ids
/// [rows, T], positions [rows, T] and the attention mask [rows, total] into this step's host
/// arrays, then <see cref="Run"/> binds them (positions only when the graph has a position_ids
/// input), the logits buffer and the KV cache, runs with cancellation bridged to
/// <see cref="RunOptions.Terminate"/>, and leaves float32 logits in <see cref="Logits"/>
/// (float16 widened). Views over the host arrays are made once per shape and kept; a binding is
/// only changed when its value changes, so a decode step of a fixed shape binds nothing new.
/// Not thread-safe.
/// </summary>
internal sealed class BoundRunStep : IDisposable
{
    private const int MaxCachedViews = 4096; // beyond this, views of new shapes live for one run
    private readonly DecoderModel _model;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly LogitsBuffer _logits;      // [rows, vocab]
    private readonly long[] _ids, _positions;   // [rows, T] of the next run
    private readonly long[] _mask;              // [rows, total] of the next run
    private readonly DirectLengthInputs? _direct; // the runtime's form of the graph: GQA's lengths and bias from _mask
    private readonly Dictionary<(int Input, int Rows, int Width), OrtValue> _views = [];
    private readonly List<OrtValue> _transient = []; // views of this run alone
    private OrtValue? _boundIds, _boundPositions, _boundMask;
    private readonly bool _rebindHostInputs;    // host inputs are copied to the device when bound, so every run binds them
    private int _boundLogitsRows = -1;          // rows of the logits view bound now; -1: none (or ONNX Runtime's own output)

    public BoundRunStep(DecoderModel model, int rows, int maxTokens, int maxLength)
    {
        _model = model;
        Rows = rows;
        // ONNX Runtime uses a bound host value in place when the graph reads it on the CPU; for a device provider it copies
        // the value at BindInput time, so a value whose contents change must be bound again before each run.
        _rebindHostInputs = model.Provider != ExecutionProvider.Cpu;
        _ids = GC.AllocateArray<long>(checked(rows * maxTokens), pinned: true);
        _positions = GC.AllocateArray<long>(checked(rows * maxTokens), pinned: true);
        _mask = GC.AllocateArray<long>(checked(rows * maxLength), pinned: true);
        try
        {
            _binding = model.Session.CreateIoBinding();
            if (model.DirectLengths) _direct = new DirectLengthInputs(rows, maxLength, model.AttentionBiasType, _rebindHostInputs);
            _logits = new LogitsBuffer(model.Memory, rows, model.Folder.VocabSize, model.LogitsElementType);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int Rows { get; }

    /// <summary>Ids of the next run, [rows, tokens] row-major.</summary>
    public Span<long> Ids(int rows, int tokens) => _ids.AsSpan(0, rows * tokens);
    /// <summary>Position ids of the next run, [rows, tokens] (ignored by a graph without position_ids).</summary>
    public Span<long> Positions(int rows, int tokens) => _positions.AsSpan(0, rows * tokens);
    /// <summary>The attention mask of the next run, [rows, total]: 1 for a column the row attends to.</summary>
    public Span<long> Mask(int rows, int total) => _mask.AsSpan(0, rows * total);
    /// <summary>Next-token logits of every row after the last run: [rows, vocab].</summary>
    public Span<float> Logits => _logits.Values;
    /// <summary>Wall time of the last run's call into ONNX Runtime (RunWithBinding), so that a caller can tell
    /// its own time from ONNX Runtime's without the profiler (which slows every node).</summary>
    public TimeSpan LastRunTime { get; private set; }

    /// <summary>
    /// Runs <paramref name="rows"/> rows of <paramref name="tokens"/> new tokens over a past of
    /// <paramref name="pastLength"/> columns (<paramref name="total"/> = past + tokens). The KV is the
    /// first rows of <paramref name="cache"/>, or, with <paramref name="cacheRow"/> >= 0, that one row
    /// of a shared cache (a batch-of-one run writing straight into a batch row).
    /// </summary>
    /// <paramref name="allPositions"/>, when given for a batch of one, also receives every new position's logits
    /// [tokens, vocab] (speculative verification). <paramref name="rowTokens"/>, when given, says how many of each
    /// row's <paramref name="tokens"/> are real (rows of a prefill run right padded to the longest): each row's
    /// logits are those after its last real token; with <paramref name="cacheRow"/> >= 0 the rows are that many
    /// consecutive rows of the cache from there. <paramref name="leftPadded"/> false promises that no row of the mask
    /// has a 0 before its last 1 (rows that start at column 0), so a graph in the runtime's form binds no bias of its own.
    public void Run(int rows, int tokens, int total, KvCache cache, int cacheRow, int pastLength, CancellationToken cancellationToken,
        float[]? allPositions = null, ReadOnlySpan<int> rowTokens = default, bool leftPadded = true)
    {
        if (!rowTokens.IsEmpty && (rowTokens.Length != rows || (!_model.FullLogits && tokens > 1 && rowTokens.ContainsAnyExcept(tokens))))
            throw new InvalidOperationException("rows of different lengths in one run need a graph with logits for every position, and one length per row");
        if (allPositions is not null && (rows != 1 || !_model.FullLogits))
            throw new InvalidOperationException("scoring every position needs a batch of one and a graph with logits for every position");
        if (rows <= 0 || rows > Rows || tokens <= 0 || rows * tokens > _ids.Length || rows * total > _mask.Length)
            throw new ArgumentOutOfRangeException(nameof(rows), $"{rows} rows x {tokens} tokens over {total} columns do not fit this step");
        var transient = _transient;
        try
        {
            Bind(GraphContract.InputIds, ref _boundIds, View(0, _ids, rows, tokens, transient));
            if (_model.HasPositionIds) Bind(GraphContract.PositionIds, ref _boundPositions, View(1, _positions, rows, tokens, transient));
            if (_model.HasAttentionMask) Bind(GraphContract.AttentionMask, ref _boundMask, View(2, _mask, rows, total, transient));
            _direct?.Bind(_binding, _mask.AsSpan(0, rows * total), rows, tokens, total, leftPadded, transient);
            bool everyPosition = _model.FullLogits && tokens > 1;
            if (everyPosition)
            {
                // [rows, T, vocab]: ONNX Runtime allocates it in host memory; the last position is copied out.
                _binding.BindOutputToDevice(GraphContract.Logits, _model.Memory.Host.Info);
                _boundLogitsRows = -1;
            }
            else if (_boundLogitsRows != rows) // one position per row: [rows, 1, vocab] lands in the logits buffer
            {
                _binding.BindOutput(GraphContract.Logits, _logits.View(rows));
                _boundLogitsRows = rows;
            }
            if (cacheRow >= 0) cache.BindRow(_binding, _model.Folder, cacheRow, rows);
            else cache.Bind(_binding, _model.Folder, pastLength, total, rows);
            Execute(cancellationToken);
        }
        finally
        {
            foreach (var view in transient) OrtValueLedger.Release(view);
            if (transient.Count > 0) _boundIds = _boundPositions = _boundMask = null; // the binding held a released value
            transient.Clear();
        }
        if (allPositions is not null && tokens > 1) _logits.CopyAllPositions(_binding, tokens, allPositions);
        else if (_model.FullLogits && tokens > 1) _logits.CopyLastPositions(_binding, rows, tokens, rowTokens);
        else _logits.Complete(rows);
        if (allPositions is not null && tokens == 1) _logits.Values[.._model.Folder.VocabSize].CopyTo(allPositions); // [1, vocab]
        cache.Advance(total);
    }

    private void Bind(string name, ref OrtValue? bound, OrtValue value)
    {
        if (ReferenceEquals(bound, value) && !_rebindHostInputs) return;
        _binding.BindInput(name, value);
        bound = value;
    }

    /// <summary>A [rows, width] view over the start of <paramref name="array"/>: kept for one-token runs and
    /// masks (shapes that repeat), made for this run alone otherwise.</summary>
    private OrtValue View(int input, long[] array, int rows, int width, List<OrtValue> transient)
    {
        if (_views.TryGetValue((input, rows, width), out var view)) return view;
        view = OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, array.AsMemory(0, rows * width), [rows, width]));
        bool repeats = input == 2 || width == 1;
        if (repeats && _views.Count < MaxCachedViews) _views.Add((input, rows, width), view);
        else transient.Add(view);
        return view;
    }

    private void Execute(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (!cancellationToken.CanBeCanceled)
        {
            // Nothing can set Terminate: no registration and no native call to clear it.
            long start = Stopwatch.GetTimestamp();
            _model.Session.RunWithBinding(_runOptions, _binding);
            LastRunTime = Stopwatch.GetElapsedTime(start);
            return;
        }
        using var registration = cancellationToken.Register(static state => ((RunOptions)state!).Terminate = true, _runOptions);
        try
        {
            long start = Stopwatch.GetTimestamp();
            _model.Session.RunWithBinding(_runOptions, _binding);
            LastRunTime = Stopwatch.GetElapsedTime(start);
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

    public void Dispose()
    {
        _binding?.Dispose();
        foreach (var view in _views.Values) OrtValueLedger.Release(view);
        _views.Clear();
        _logits?.Dispose();
        _direct?.Dispose();
        _runOptions.Dispose();
    }
}

/// <summary>Records, when disposed, that ONNX Runtime's output values of a run were released.</summary>
internal readonly struct LedgerRelease(int count) : IDisposable
{
    public void Dispose() => OrtValueLedger.TrackDisposed(count);
}
