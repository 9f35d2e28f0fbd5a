using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxDecoder.Runtime.Memory;

namespace OnnxDecoder.Runtime;

/// <summary>What a KV cache holds and has done: where its memory is, how many views and copies it made.</summary>
public sealed record KvCacheStatistics(MemoryPlace Place, int Buffers, long Bytes, long ViewsCreated, long SegmentsCopied, long BytesCopied);

/// <summary>
/// The key/value cache of one batch of sequences, allocated once at the maximum length through the
/// session's allocator (host memory on CPU, device memory with CUDA or DirectML).
/// <list type="bullet">
/// <item>Shared mode (GroupQueryAttention graphs): one buffer per layer for keys and one for
/// values, [batch, kv_heads, max_length, head_dim], bound as both past and present, so a decode
/// step copies no KV. A row is contiguous, so one row's view can be bound alone (a prompt prefilled
/// straight into its batch row).</item>
/// <item>Separate mode (portable graphs): two buffers per tensor. The graph writes present
/// [batch, kv_heads, T, head_dim] into one; on the next step that same memory is bound as past
/// and the other buffer receives the new present: no copy besides the graph's own Concat. Its views
/// change shape every step (T grows), so they are made per run over the same memory.</item>
/// </list>
/// The cache owns its buffers and every view over them; dispose it before the model.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly bool _rebindEachRun;
    private readonly SessionAllocator _allocator;
    private readonly int _layers, _batch, _kvHeads, _headDim, _elementSize;
    private readonly NativeBuffer[,] _buffers;   // [layer * 2 + (0 key | 1 value), 0 | 1]
    private readonly TensorViews[,] _views;      // one view cache per buffer
    private readonly OrtValue?[] _pastViews, _presentViews; // separate mode: this run's views
    private readonly long[] _pastShape, _presentShape;
    private readonly CopyRange[] _ranges;        // scratch: [layers * 2 * kv_heads] segments of one row copy
    private int _current;                        // which of the two buffers holds the past (separate mode)
    private OrtIoBinding? _boundTo;              // shared mode binds once per (binding, rows or row)
    private int _boundRows, _boundRow;
    private long _segmentsCopied, _bytesCopied;

    /// <param name="elementType">Float (4 bytes) or Float16 (2 bytes), as the graph's past/present.</param>
    /// <param name="rebindEachRun">The views are host memory read by a device provider, which copies a bound host value when it
    /// is bound: a shared buffer is then bound again before every run, or the device would read the first run's copy.</param>
    internal KvCache(SessionAllocator allocator, int layers, int batch, int kvHeads, int maxLength, int headDim, bool shared, TensorElementType elementType,
        bool rebindEachRun = false)
    {
        _allocator = allocator;
        _rebindEachRun = rebindEachRun;
        _elementSize = SizeOf(elementType);
        (_layers, _batch, _kvHeads, _headDim) = (layers, batch, kvHeads, headDim);
        MaxLength = maxLength;
        Shared = shared;
        BytesPerBuffer = checked((long)batch * kvHeads * maxLength * headDim * _elementSize);
        _buffers = new NativeBuffer[layers * 2, shared ? 1 : 2];
        _views = new TensorViews[layers * 2, shared ? 1 : 2];
        _pastViews = new OrtValue?[layers * 2];
        _presentViews = new OrtValue?[layers * 2];
        _pastShape = [batch, kvHeads, 0, headDim];
        _presentShape = [batch, kvHeads, 0, headDim];
        _ranges = new CopyRange[layers * 2 * kvHeads];
        try
        {
            for (int t = 0; t < layers * 2; t++)
                for (int copy = 0; copy < _buffers.GetLength(1); copy++)
                {
                    _buffers[t, copy] = allocator.Allocate(BytesPerBuffer);
                    _views[t, copy] = new TensorViews(_buffers[t, copy], elementType, _elementSize) { CountsAsKv = true };
                    OrtValueLedger.ReportKvBuffer();
                }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int MaxLength { get; }
    public bool Shared { get; }
    public long BytesPerBuffer { get; }
    public MemoryPlace Place => _allocator.Place;

    /// <summary>Bytes this cache holds: layers x 2 x batch x kv_heads x max_length x head_dim x element size (x 2 buffers when separate).</summary>
    public long TotalBytes => BytesPerBuffer * _buffers.Length;

    public KvCacheStatistics Statistics
    {
        get
        {
            long views = 0;
            foreach (var v in _views) views += v?.Created ?? 0;
            return new KvCacheStatistics(Place, _buffers.Length, TotalBytes, views, _segmentsCopied, _bytesCopied);
        }
    }

    /// <summary>What a cache of these dimensions will allocate, before allocating it.</summary>
    public static long BytesFor(int layers, int batch, int kvHeads, int maxLength, int headDim, bool shared, TensorElementType elementType = TensorElementType.Float) =>
        checked((long)layers * 2 * batch * kvHeads * maxLength * headDim * SizeOf(elementType) * (shared ? 1 : 2));

    public static int SizeOf(TensorElementType elementType) => elementType switch
    {
        TensorElementType.Float => 4,
        TensorElementType.Float16 => 2,
        _ => throw new NotSupportedException($"a KV cache of {elementType} is not supported: export with --precision fp32 or fp16"),
    };

    private long RowBytes => BytesPerBuffer / _batch;

    /// <summary>Binds past inputs and present outputs for a run whose past holds <paramref name="pastLength"/>
    /// positions and whose present will hold <paramref name="totalLength"/>, over the first
    /// <paramref name="rows"/> rows of the batch (default: all).</summary>
    public void Bind(OrtIoBinding binding, ModelFolder folder, int pastLength, int totalLength, int rows = 0)
    {
        if (rows == 0) rows = _batch;
        if (rows < 0 || rows > _batch) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"the cache holds 1..{_batch} rows");
        if (Shared)
        {
            BindShared(binding, folder, rows, row: -1);
            return;
        }
        // The previous present views already cover exactly the past; reuse them (decided once for all tensors).
        bool pastFits = _pastShape[0] == rows && _pastShape[2] == pastLength;
        _pastShape[0] = rows;
        _pastShape[2] = pastLength;
        _presentShape[0] = rows;
        _presentShape[2] = totalLength;
        for (int t = 0; t < _layers * 2; t++)
        {
            if (_pastViews[t] is null || !pastFits)
            {
                OrtValueLedger.Release(_pastViews[t]);
                _pastViews[t] = _views[t, _current].Create(0, _pastShape);
            }
            OrtValueLedger.Release(_presentViews[t]);
            _presentViews[t] = _views[t, 1 - _current].Create(0, _presentShape);
            binding.BindInput(PastName(folder, t), _pastViews[t]!);
            binding.BindOutput(PresentName(folder, t), _presentViews[t]!);
        }
    }

    /// <summary>Shared mode: binds the view of <paramref name="rows"/> consecutive rows from <paramref name="row"/>,
    /// [rows, kv_heads, max_length, head_dim], as past and present, so a prefill run (one prompt, or several
    /// side by side) writes straight into those rows of the batch.</summary>
    public void BindRow(OrtIoBinding binding, ModelFolder folder, int row, int rows = 1)
    {
        if (!Shared) throw new InvalidOperationException("only a shared past/present buffer (ort lowering) binds one row alone");
        if (row < 0 || rows < 1 || row + rows > _batch) throw new ArgumentOutOfRangeException(nameof(row), row, $"rows {row}..{row + rows - 1} are not all in the cache's rows 0..{_batch - 1}");
        BindShared(binding, folder, rows, row);
    }

    private void BindShared(OrtIoBinding binding, ModelFolder folder, int rows, int row)
    {
        if (!_rebindEachRun && ReferenceEquals(_boundTo, binding) && _boundRows == rows && _boundRow == row) return;
        for (int t = 0; t < _layers * 2; t++)
        {
            var view = _views[t, 0].Get(row < 0 ? 0 : row * RowBytes, rows, _kvHeads, MaxLength, _headDim);
            binding.BindInput(PastName(folder, t), view);
            binding.BindOutput(PresentName(folder, t), view);
        }
        (_boundTo, _boundRows, _boundRow) = (binding, rows, row);
    }

    private static string PastName(ModelFolder folder, int t) => t % 2 == 0 ? folder.PastKeyName(t / 2) : folder.PastValueName(t / 2);
    private static string PresentName(ModelFolder folder, int t) => t % 2 == 0 ? folder.PresentKeyName(t / 2) : folder.PresentValueName(t / 2);

    /// <summary>
    /// Copies <paramref name="count"/> positions of every layer and head from one row of
    /// <paramref name="source"/> (this cache too) into one row of this cache. Lengths name each cache's
    /// current layout (its sequence length; ignored in shared mode, whose rows span the max length).
    /// Device memory moves device to device; nothing passes through the host. Used once per request
    /// at most (a prompt placed on a shared timeline, a prefix shared from another row), never per token.
    /// </summary>
    public void CopySegment(KvCache source, int sourceLength, int sourceRow, int sourceStart, int count, int targetLength, int targetRow, int targetStart)
    {
        if (source._layers != _layers || source._kvHeads != _kvHeads || source._headDim != _headDim)
            throw new ArgumentException("the caches belong to different models", nameof(source));
        if (source._elementSize != _elementSize) throw new ArgumentException("the caches hold different element types", nameof(source));
        if (source.Place != Place) throw new ArgumentException($"the caches live in different memory ({source.Place}, {Place})", nameof(source));
        int sourceStride = source.Shared ? source.MaxLength : sourceLength, targetStride = Shared ? MaxLength : targetLength;
        if (count < 0 || sourceStart < 0 || targetStart < 0 || sourceStart + count > sourceStride || targetStart + count > targetStride
            || (uint)sourceRow >= (uint)source._batch || (uint)targetRow >= (uint)_batch)
            throw new ArgumentOutOfRangeException(nameof(count), $"segment [{sourceStart}, +{count}) of row {sourceRow} does not fit [{targetStart}, +{count}) of row {targetRow}");
        if (count == 0) return;
        int n = 0;
        for (int t = 0; t < _layers * 2; t++)
            n = AddRow(n, source.Current(t), sourceRow, sourceStride, sourceStart, Current(t), targetRow, targetStride, targetStart, count);
        Copy(n);
    }

    /// <summary>
    /// Moves every row's live positions [start, start + length) so that they end at
    /// <paramref name="newLength"/> (left padding before them), over the first <paramref name="rows"/>
    /// rows; rows of length 0 are left as they are. Shrinks the timeline of a batch whose rows
    /// joined at different times, or grows it for a prompt longer than the timeline. Shared mode
    /// moves in place (host memory only); separate mode writes the new layout into the other buffer.
    /// </summary>
    public void Relayout(int rows, ReadOnlySpan<int> start, ReadOnlySpan<int> length, int oldLength, int newLength)
    {
        if (newLength < 0 || newLength > MaxLength) throw new ArgumentOutOfRangeException(nameof(newLength), newLength, $"the cache holds 0..{MaxLength} positions");
        if (Shared && !_allocator.IsHostAccessible) throw new InvalidOperationException("moving KV within one device buffer is not supported: rows on a shared timeline need host KV");
        int oldStride = Shared ? MaxLength : oldLength, newStride = Shared ? MaxLength : newLength;
        for (int row = 0; row < rows; row++)
            if (length[row] > newLength || start[row] < 0 || start[row] + length[row] > oldLength)
                throw new ArgumentOutOfRangeException(nameof(length), $"row {row}: [{start[row]}, +{length[row]}) does not fit {oldLength} -> {newLength} positions");
        for (int row = 0; row < rows; row++)
        {
            if (length[row] == 0) continue;
            int n = 0;
            for (int t = 0; t < _layers * 2; t++)
                n = AddRow(n, Current(t), row, oldStride, start[row], Shared ? Current(t) : _buffers[t, 1 - _current], row, newStride, newLength - length[row], length[row]);
            Copy(n);
        }
        if (Shared) return;
        _current = 1 - _current;
        for (int t = 0; t < _layers * 2; t++)
        {
            OrtValueLedger.Release(_pastViews[t]);
            _pastViews[t] = null;
        }
        _pastShape[2] = newLength;
    }

    /// <summary>Adds the ranges of <paramref name="count"/> positions of every kv head of one row between two
    /// buffers laid out [rows, kv_heads, stride, head_dim]; returns the new number of ranges.</summary>
    private int AddRow(int n, NativeBuffer from, int fromRow, int fromStride, int fromStart, NativeBuffer to, int toRow, int toStride, int toStart, int count)
    {
        long position = (long)_headDim * _elementSize, bytes = count * position;
        for (int h = 0; h < _kvHeads; h++)
            _ranges[n++] = new CopyRange(from, (((long)fromRow * _kvHeads + h) * fromStride + fromStart) * position,
                to, (((long)toRow * _kvHeads + h) * toStride + toStart) * position, bytes);
        return n;
    }

    private void Copy(int n)
    {
        _allocator.Copy(_ranges.AsSpan(0, n));
        _segmentsCopied += n;
        foreach (var r in _ranges.AsSpan(0, n)) _bytesCopied += r.Bytes;
        Array.Clear(_ranges, 0, n);
    }

    /// <summary>The buffer holding the past of tensor <paramref name="t"/> (layer * 2 + kind).</summary>
    private NativeBuffer Current(int t) => _buffers[t, Shared ? 0 : _current];

    /// <summary>After a successful run in separate mode, the present becomes the next past.</summary>
    public void Advance(int totalLength)
    {
        if (Shared) return;
        _current = 1 - _current;
        for (int t = 0; t < _layers * 2; t++)
        {
            OrtValueLedger.Release(_pastViews[t]);
            _pastViews[t] = _presentViews[t];
            _presentViews[t] = null;
        }
        _pastShape[2] = totalLength;
    }

    /// <summary>Starts over with an empty past (the buffers are reused).</summary>
    public void Reset()
    {
        _current = 0;
        for (int t = 0; t < _layers * 2; t++)
        {
            OrtValueLedger.Release(_pastViews[t]);
            _pastViews[t] = null;
        }
        _pastShape[2] = -1;
    }

    /// <summary>The keys of one layer for tests and tools: [batch, kv_heads, length, head_dim] as laid out now
    /// (float16 widened). Host memory only.</summary>
    public unsafe float[] ReadKeys(int layer, int length)
    {
        if (!_allocator.IsHostAccessible) throw new NotSupportedException("ReadKeys reads host memory; this cache lives on the device");
        var buffer = Current(layer * 2);
        int stride = Shared ? MaxLength : length;
        var result = new float[_batch * _kvHeads * length * _headDim];
        int count = (int)(BytesPerBuffer / _elementSize);
        for (int bh = 0; bh < _batch * _kvHeads; bh++)
        {
            var target = result.AsSpan(bh * length * _headDim, length * _headDim);
            if (_elementSize == 4)
                new ReadOnlySpan<float>((void*)buffer.Pointer, count).Slice(bh * stride * _headDim, length * _headDim).CopyTo(target);
            else
            {
                var halves = new ReadOnlySpan<Half>((void*)buffer.Pointer, count).Slice(bh * stride * _headDim, length * _headDim);
                for (int i = 0; i < halves.Length; i++) target[i] = (float)halves[i];
            }
        }
        return result;
    }

    public void Dispose()
    {
        _boundTo = null;
        for (int t = 0; t < _pastViews.Length; t++)
        {
            OrtValueLedger.Release(_pastViews[t]);
            OrtValueLedger.Release(_presentViews[t]);
            _pastViews[t] = _presentViews[t] = null;
        }
        foreach (var views in _views) views?.Dispose();
        foreach (var buffer in _buffers) buffer?.Dispose();
    }
}
