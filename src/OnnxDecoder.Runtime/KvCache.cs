using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxDecoder.Runtime;

/// <summary>
/// The key/value cache of one batch of sequences, allocated once at the maximum length.
/// <list type="bullet">
/// <item>Shared mode (GroupQueryAttention graphs): one buffer per layer for keys and one for
/// values, [batch, kv_heads, max_length, head_dim], bound as both past and present, so a decode
/// step copies no KV.</item>
/// <item>Separate mode (portable graphs): two buffers per tensor. The graph writes present
/// [batch, kv_heads, T, head_dim] into one; on the next step that same memory is bound as past
/// and the other buffer receives the new present: no copy besides the graph's own Concat.</item>
/// </list>
/// The cache owns its native memory and every OrtValue it creates.
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly int _layers, _batch, _kvHeads, _headDim, _elementSize;
    private readonly TensorElementType _elementType;
    private readonly nint[,] _buffers; // [layer * 2 + (0 key | 1 value), 0 | 1]
    private readonly OrtValue?[][] _sharedByRows; // shared mode: [rows - 1][layer * 2 + kind] views over the first rows
    private readonly OrtValue?[] _pastViews;
    private readonly OrtValue?[] _presentViews;
    private readonly long[] _pastShape, _presentShape;
    private int _current; // which of the two buffers holds the past (separate mode)
    private OrtIoBinding? _sharedBoundTo; // shared mode binds once per row count: the same buffers serve every run
    private int _sharedBoundRows;

    /// <param name="elementType">Float (4 bytes) or Float16 (2 bytes), as the graph's past/present.</param>
    public KvCache(int layers, int batch, int kvHeads, int maxLength, int headDim, bool shared, TensorElementType elementType = TensorElementType.Float)
    {
        _elementType = elementType;
        _elementSize = SizeOf(elementType);
        _layers = layers;
        _batch = batch;
        _kvHeads = kvHeads;
        _headDim = headDim;
        MaxLength = maxLength;
        Shared = shared;
        BytesPerBuffer = checked((long)batch * kvHeads * maxLength * headDim * _elementSize);
        _buffers = new nint[layers * 2, shared ? 1 : 2];
        _sharedByRows = new OrtValue?[shared ? batch : 0][];
        _pastViews = new OrtValue?[layers * 2];
        _presentViews = new OrtValue?[layers * 2];
        _pastShape = [batch, kvHeads, 0, headDim];
        _presentShape = [batch, kvHeads, 0, headDim];
        try
        {
            for (int t = 0; t < layers * 2; t++)
                for (int copy = 0; copy < _buffers.GetLength(1); copy++)
                {
                    _buffers[t, copy] = (nint)NativeMemory.AlignedAlloc((nuint)BytesPerBuffer, 64);
                    NativeMemory.Clear((void*)_buffers[t, copy], (nuint)BytesPerBuffer);
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

    /// <summary>Bytes this cache holds: layers x 2 x batch x kv_heads x max_length x head_dim x 4 (x 2 buffers when separate).</summary>
    public long TotalBytes => BytesPerBuffer * _buffers.Length;

    /// <summary>What a cache of these dimensions will allocate, before allocating it.</summary>
    public static long BytesFor(int layers, int batch, int kvHeads, int maxLength, int headDim, bool shared, TensorElementType elementType = TensorElementType.Float) =>
        checked((long)layers * 2 * batch * kvHeads * maxLength * headDim * SizeOf(elementType) * (shared ? 1 : 2));

    public static int SizeOf(TensorElementType elementType) => elementType switch
    {
        TensorElementType.Float => 4,
        TensorElementType.Float16 => 2,
        _ => throw new NotSupportedException($"a KV cache of {elementType} is not supported: export with --precision fp32 or fp16"),
    };

    /// <summary>Binds past inputs and present outputs for a run whose past holds <paramref name="pastLength"/>
    /// positions and whose present will hold <paramref name="totalLength"/>, over the first
    /// <paramref name="rows"/> rows of the batch (default: all).</summary>
    public void Bind(OrtIoBinding binding, ModelFolder folder, int pastLength, int totalLength, int rows = 0)
    {
        if (rows == 0) rows = _batch;
        if (rows < 0 || rows > _batch) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"the cache holds 1..{_batch} rows");
        if (Shared)
        {
            if (ReferenceEquals(_sharedBoundTo, binding) && _sharedBoundRows == rows) return;
            var views = _sharedByRows[rows - 1] ??= new OrtValue?[_layers * 2];
            for (int t = 0; t < views.Length; t++)
                views[t] ??= View(_buffers[t, 0], [rows, _kvHeads, MaxLength, _headDim]);
            for (int layer = 0; layer < _layers; layer++)
            {
                binding.BindInput(folder.PastKeyName(layer), views[layer * 2]!);
                binding.BindOutput(folder.PresentKeyName(layer), views[layer * 2]!);
                binding.BindInput(folder.PastValueName(layer), views[layer * 2 + 1]!);
                binding.BindOutput(folder.PresentValueName(layer), views[layer * 2 + 1]!);
            }
            _sharedBoundTo = binding;
            _sharedBoundRows = rows;
            return;
        }
        // The previous present views already cover exactly the past; reuse them (decided once for all tensors).
        bool pastFits = _pastShape[0] == rows && _pastShape[2] == pastLength;
        _pastShape[0] = rows;
        _pastShape[2] = pastLength;
        for (int layer = 0; layer < _layers; layer++)
            for (int kind = 0; kind < 2; kind++)
            {
                int t = layer * 2 + kind;
                string pastName = kind == 0 ? folder.PastKeyName(layer) : folder.PastValueName(layer);
                string presentName = kind == 0 ? folder.PresentKeyName(layer) : folder.PresentValueName(layer);
                if (_pastViews[t] is null || !pastFits)
                {
                    OrtValueLedger.Release(_pastViews[t]);
                    _pastViews[t] = View(_buffers[t, _current], _pastShape);
                }
                OrtValueLedger.Release(_presentViews[t]);
                _presentShape[0] = rows;
                _presentShape[2] = totalLength;
                _presentViews[t] = View(_buffers[t, 1 - _current], _presentShape);
                binding.BindInput(pastName, _pastViews[t]!);
                binding.BindOutput(presentName, _presentViews[t]!);
            }
    }

    /// <summary>
    /// Copies <paramref name="count"/> positions of every layer and head from one row of
    /// <paramref name="source"/> into one row of this cache. Lengths name each cache's current
    /// layout (its sequence length; ignored in shared mode, whose rows span the max length).
    /// Used once per request to move a prefilled prompt into a batch row, never per token.
    /// </summary>
    public void CopySegment(KvCache source, int sourceLength, int sourceRow, int sourceStart, int count, int targetLength, int targetRow, int targetStart)
    {
        if (source._layers != _layers || source._kvHeads != _kvHeads || source._headDim != _headDim)
            throw new ArgumentException("the caches belong to different models", nameof(source));
        int sourceStride = source.Shared ? source.MaxLength : sourceLength, targetStride = Shared ? MaxLength : targetLength;
        if (count < 0 || sourceStart < 0 || targetStart < 0 || sourceStart + count > sourceStride || targetStart + count > targetStride
            || (uint)sourceRow >= (uint)source._batch || (uint)targetRow >= (uint)_batch)
            throw new ArgumentOutOfRangeException(nameof(count), $"segment [{sourceStart}, +{count}) of row {sourceRow} does not fit [{targetStart}, +{count}) of row {targetRow}");
        if (source._elementSize != _elementSize) throw new ArgumentException("the caches hold different element types", nameof(source));
        for (int t = 0; t < _layers * 2; t++)
            CopyRow((byte*)source.Current(t), sourceRow, sourceStride, sourceStart, (byte*)Current(t), targetRow, targetStride, targetStart, count);
    }

    /// <summary>
    /// Moves every row's live positions [start, start + length) so that they end at
    /// <paramref name="newLength"/> (left padding before them), over the first <paramref name="rows"/>
    /// rows; rows of length 0 are left as they are. Shrinks the timeline of a batch whose rows
    /// joined at different times, or grows it for a prompt longer than the timeline. Shared mode
    /// moves in place; separate mode writes the new layout into the other buffer.
    /// </summary>
    public void Relayout(int rows, ReadOnlySpan<int> start, ReadOnlySpan<int> length, int oldLength, int newLength)
    {
        if (newLength < 0 || newLength > MaxLength) throw new ArgumentOutOfRangeException(nameof(newLength), newLength, $"the cache holds 0..{MaxLength} positions");
        int oldStride = Shared ? MaxLength : oldLength, newStride = Shared ? MaxLength : newLength;
        for (int row = 0; row < rows; row++)
            if (length[row] > newLength || start[row] < 0 || start[row] + length[row] > oldLength)
                throw new ArgumentOutOfRangeException(nameof(length), $"row {row}: [{start[row]}, +{length[row]}) does not fit {oldLength} -> {newLength} positions");
        for (int t = 0; t < _layers * 2; t++)
        {
            var from = (byte*)Current(t);
            var to = Shared ? from : (byte*)_buffers[t, 1 - _current];
            for (int row = 0; row < rows; row++)
                if (length[row] > 0) CopyRow(from, row, oldStride, start[row], to, row, newStride, newLength - length[row], length[row]);
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

    /// <summary>Copies <paramref name="count"/> positions of every kv head of one row between two buffers laid
    /// out [rows, kv_heads, stride, head_dim] (the same buffer too: overlapping ranges move like memmove).</summary>
    private void CopyRow(byte* from, int fromRow, int fromStride, int fromStart, byte* to, int toRow, int toStride, int toStart, int count)
    {
        long position = (long)_headDim * _elementSize, bytes = count * position;
        for (int h = 0; h < _kvHeads; h++)
            Buffer.MemoryCopy(from + (((long)fromRow * _kvHeads + h) * fromStride + fromStart) * position,
                to + (((long)toRow * _kvHeads + h) * toStride + toStart) * position, bytes, bytes);
    }

    /// <summary>The buffer holding the past of tensor <paramref name="t"/> (layer * 2 + kind).</summary>
    private nint Current(int t) => _buffers[t, Shared ? 0 : _current];

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

    /// <summary>The keys of one layer for tests and tools: [batch, kv_heads, length, head_dim] as laid out now (float16 widened).</summary>
    public float[] ReadKeys(int layer, int length)
    {
        int t = layer * 2;
        nint buffer = Shared ? _buffers[t, 0] : _buffers[t, _current];
        int stride = Shared ? MaxLength : length;
        var result = new float[_batch * _kvHeads * length * _headDim];
        int count = (int)(BytesPerBuffer / _elementSize);
        for (int bh = 0; bh < _batch * _kvHeads; bh++)
        {
            var target = result.AsSpan(bh * length * _headDim, length * _headDim);
            if (_elementSize == 4)
                new ReadOnlySpan<float>((void*)buffer, count).Slice(bh * stride * _headDim, length * _headDim).CopyTo(target);
            else
            {
                var halves = new ReadOnlySpan<Half>((void*)buffer, count).Slice(bh * stride * _headDim, length * _headDim);
                for (int i = 0; i < halves.Length; i++) target[i] = (float)halves[i];
            }
        }
        return result;
    }

    private OrtValue View(nint buffer, long[] shape) => OrtValueLedger.Track(
        OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, _elementType, shape, buffer,
            shape.Aggregate(1L, (a, b) => a * b) * _elementSize));

    public void Dispose()
    {
        foreach (var views in _sharedByRows)
            if (views is not null) foreach (var v in views) OrtValueLedger.Release(v);
        _sharedBoundTo = null;
        foreach (var v in _pastViews) OrtValueLedger.Release(v);
        foreach (var v in _presentViews) OrtValueLedger.Release(v);
        Array.Clear(_sharedByRows);
        Array.Clear(_pastViews);
        Array.Clear(_presentViews);
        for (int t = 0; t < _buffers.GetLength(0); t++)
            for (int copy = 0; copy < _buffers.GetLength(1); copy++)
            {
                if (_buffers[t, copy] != 0) NativeMemory.AlignedFree((void*)_buffers[t, copy]);
                _buffers[t, copy] = 0;
            }
    }
}
