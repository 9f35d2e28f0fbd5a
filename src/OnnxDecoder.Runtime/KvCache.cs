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
    private readonly int _layers, _batch, _kvHeads, _headDim;
    private readonly nint[,] _buffers; // [layer * 2 + (0 key | 1 value), 0 | 1]
    private readonly OrtValue?[] _shared;
    private readonly OrtValue?[] _pastViews;
    private readonly OrtValue?[] _presentViews;
    private readonly long[] _pastShape, _presentShape;
    private int _current; // which of the two buffers holds the past (separate mode)
    private OrtIoBinding? _sharedBoundTo; // shared mode binds once: the same buffers serve every run

    public KvCache(int layers, int batch, int kvHeads, int maxLength, int headDim, bool shared)
    {
        _layers = layers;
        _batch = batch;
        _kvHeads = kvHeads;
        _headDim = headDim;
        MaxLength = maxLength;
        Shared = shared;
        BytesPerBuffer = checked((long)batch * kvHeads * maxLength * headDim * sizeof(float));
        _buffers = new nint[layers * 2, shared ? 1 : 2];
        _shared = new OrtValue?[layers * 2];
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
            if (shared)
                for (int t = 0; t < layers * 2; t++)
                    _shared[t] = View(_buffers[t, 0], [batch, kvHeads, maxLength, headDim]);
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
    public static long BytesFor(int layers, int batch, int kvHeads, int maxLength, int headDim, bool shared) =>
        checked((long)layers * 2 * batch * kvHeads * maxLength * headDim * sizeof(float) * (shared ? 1 : 2));

    /// <summary>Binds past inputs and present outputs for a run whose past holds <paramref name="pastLength"/>
    /// positions and whose present will hold <paramref name="totalLength"/>.</summary>
    public void Bind(OrtIoBinding binding, ModelFolder folder, int pastLength, int totalLength)
    {
        if (Shared && ReferenceEquals(_sharedBoundTo, binding)) return;
        for (int layer = 0; layer < _layers; layer++)
            for (int kind = 0; kind < 2; kind++)
            {
                int t = layer * 2 + kind;
                string pastName = kind == 0 ? folder.PastKeyName(layer) : folder.PastValueName(layer);
                string presentName = kind == 0 ? folder.PresentKeyName(layer) : folder.PresentValueName(layer);
                if (Shared)
                {
                    binding.BindInput(pastName, _shared[t]!);
                    binding.BindOutput(presentName, _shared[t]!);
                    _sharedBoundTo = binding;
                    continue;
                }
                // The previous present view already covers exactly the past; reuse it.
                if (_pastViews[t] is null || _pastShape[2] != pastLength)
                {
                    OrtValueLedger.Release(_pastViews[t]);
                    _pastShape[2] = pastLength;
                    _pastViews[t] = View(_buffers[t, _current], _pastShape);
                }
                OrtValueLedger.Release(_presentViews[t]);
                _presentShape[2] = totalLength;
                _presentViews[t] = View(_buffers[t, 1 - _current], _presentShape);
                binding.BindInput(pastName, _pastViews[t]!);
                binding.BindOutput(presentName, _presentViews[t]!);
            }
    }

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

    /// <summary>The keys of one layer for tests and tools: [batch, kv_heads, length, head_dim] as laid out now.</summary>
    public float[] ReadKeys(int layer, int length)
    {
        int t = layer * 2;
        nint buffer = Shared ? _buffers[t, 0] : _buffers[t, _current];
        int stride = Shared ? MaxLength : length;
        var result = new float[_batch * _kvHeads * length * _headDim];
        var source = new ReadOnlySpan<float>((void*)buffer, (int)(BytesPerBuffer / sizeof(float)));
        for (int bh = 0; bh < _batch * _kvHeads; bh++)
            source.Slice(bh * stride * _headDim, length * _headDim).CopyTo(result.AsSpan(bh * length * _headDim));
        return result;
    }

    private static OrtValue View(nint buffer, long[] shape) => OrtValueLedger.Track(
        OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.Float, shape, buffer,
            shape.Aggregate(1L, (a, b) => a * b) * sizeof(float)));

    public void Dispose()
    {
        foreach (var v in _shared) OrtValueLedger.Release(v);
        foreach (var v in _pastViews) OrtValueLedger.Release(v);
        foreach (var v in _presentViews) OrtValueLedger.Release(v);
        Array.Clear(_shared);
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
