using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Where next-token logits land: [rows, vocab] float32 for sampling. A float32 graph writes them
/// there directly; a float16 graph writes into a pinned float16 buffer that is widened after each
/// run (vectorised, no allocation). Views for each row count are made once and kept.
/// </summary>
internal sealed unsafe class LogitsBuffer : IDisposable
{
    private readonly int _vocab;
    private readonly Half[]? _half;               // [rows, vocab], pinned: what a float16 graph writes
    private readonly OrtValue?[] _views;          // [rows, 1, vocab] per row count

    public LogitsBuffer(int rows, int vocab, TensorElementType elementType)
    {
        if (elementType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new NotSupportedException($"logits of {elementType} are not supported: export with --precision fp32 or fp16");
        _vocab = vocab;
        Values = new float[checked(rows * vocab)];
        if (elementType == TensorElementType.Float16) _half = GC.AllocateArray<Half>(rows * vocab, pinned: true);
        _views = new OrtValue?[rows + 1];
    }

    /// <summary>The logits of the last run, [rows, vocab].</summary>
    public float[] Values { get; }
    public bool IsFloat16 => _half is not null;

    /// <summary>The output to bind for a run of <paramref name="rows"/> rows and one position: [rows, 1, vocab].</summary>
    public OrtValue View(int rows) => _views[rows] ??= OrtValueLedger.Track(_half is null
        ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, Values.AsMemory(0, rows * _vocab), [rows, 1, _vocab])
        : OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.Float16, [rows, 1, _vocab],
            (nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref _half[0]), (long)rows * _vocab * sizeof(ushort)));

    /// <summary>After a run bound to <see cref="View"/>: widens float16 logits into <see cref="Values"/>.</summary>
    public void Complete(int rows)
    {
        if (_half is not null) TensorPrimitives.ConvertToSingle(_half.AsSpan(0, rows * _vocab), Values.AsSpan(0, rows * _vocab));
    }

    /// <summary>After a run whose logits output was bound to the device (a graph with logits for every
    /// position): copies the last position of each row of [rows, positions, vocab] and releases the outputs.</summary>
    public void CopyLastPositions(OrtIoBinding binding, int rows, int positions)
    {
        using var outputs = binding.GetOutputValues();
        OrtValueLedger.TrackCreated(outputs.Count);
        using var release = new LedgerRelease(outputs.Count);
        var output = outputs[Array.IndexOf(binding.GetOutputNames(), GraphContract.Logits)];
        for (int row = 0; row < rows; row++)
        {
            long offset = ((long)row * positions + positions - 1) * _vocab;
            var target = Values.AsSpan(row * _vocab, _vocab);
            if (_half is null) output.GetTensorDataAsSpan<float>().Slice((int)offset, _vocab).CopyTo(target);
            else TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<Float16, Half>(output.GetTensorDataAsSpan<Float16>()).Slice((int)offset, _vocab), target);
        }
    }

    /// <summary>Like <see cref="CopyLastPositions"/> for one row, and also copies every position of
    /// [1, positions, vocab] into <paramref name="all"/> [positions, vocab] (speculative verification).</summary>
    public void CopyAllPositions(OrtIoBinding binding, int positions, float[] all)
    {
        using var outputs = binding.GetOutputValues();
        OrtValueLedger.TrackCreated(outputs.Count);
        using var release = new LedgerRelease(outputs.Count);
        var output = outputs[Array.IndexOf(binding.GetOutputNames(), GraphContract.Logits)];
        var target = all.AsSpan(0, checked(positions * _vocab));
        if (_half is null) output.GetTensorDataAsSpan<float>()[..target.Length].CopyTo(target);
        else TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<Float16, Half>(output.GetTensorDataAsSpan<Float16>())[..target.Length], target);
        target.Slice((positions - 1) * _vocab, _vocab).CopyTo(Values.AsSpan(0, _vocab));
    }

    public void Dispose()
    {
        foreach (var view in _views) OrtValueLedger.Release(view);
    }
}
