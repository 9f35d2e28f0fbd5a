using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxDecoder.Runtime.Memory;

/// <summary>
/// The OrtValue views over one <see cref="NativeBuffer"/>, one per (offset, 4-d shape), made on first
/// use and kept until disposed: a cache whose shapes repeat (a KV row, the first N rows of a batch)
/// creates each view once, never per step. Views are counted by <see cref="OrtValueLedger"/> and by
/// <see cref="Created"/>.
/// </summary>
internal sealed class TensorViews(NativeBuffer buffer, TensorElementType elementType, int elementSize) : IDisposable
{
    private readonly Dictionary<(long Offset, long D0, long D1, long D2, long D3), OrtValue> _views = [];

    public NativeBuffer Buffer => buffer;
    /// <summary>Whether the views are over KV memory (reported to the ledger's KV counters).</summary>
    public bool CountsAsKv { get; init; }
    public long Created { get; private set; }

    /// <summary>The view [d0, d1, d2, d3] (3-d when <paramref name="d3"/> is left out) starting
    /// <paramref name="offsetBytes"/> into the buffer.</summary>
    public OrtValue Get(long offsetBytes, long d0, long d1, long d2, long d3 = -1)
    {
        if (_views.TryGetValue((offsetBytes, d0, d1, d2, d3), out var view)) return view;
        view = Create(offsetBytes, d3 < 0 ? [d0, d1, d2] : [d0, d1, d2, d3]);
        _views.Add((offsetBytes, d0, d1, d2, d3), view);
        return view;
    }

    /// <summary>A view the caller owns and releases with <see cref="OrtValueLedger.Release"/> (shapes that
    /// change every step, such as the portable lowering's growing past).</summary>
    public OrtValue Create(long offsetBytes, long[] shape)
    {
        var view = OrtValueLedger.Track(buffer.View(elementType, shape, offsetBytes, elementSize));
        if (CountsAsKv) OrtValueLedger.ReportKvView();
        Created++;
        return view;
    }

    public void Dispose()
    {
        foreach (var view in _views.Values) OrtValueLedger.Release(view);
        _views.Clear();
    }
}
