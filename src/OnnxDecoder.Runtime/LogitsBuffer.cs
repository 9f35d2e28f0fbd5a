using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime.Memory;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Where next-token logits land: [rows, vocab] float32 for sampling. The graph writes them into a
/// native block from the model's output allocator (pinned host memory under CUDA, which the device
/// writes directly, else the CPU arena). A float32 graph's block is read in place; a float16 graph's
/// block is widened after each run into a managed float32 array (vectorised, no allocation). Views
/// for each row count are made once and kept.
/// </summary>
internal sealed unsafe class LogitsBuffer : IDisposable
{
    private readonly int _rows, _vocab;
    private readonly NativeBuffer _landing;        // [rows, 1, vocab] of the graph's element type
    private readonly TensorViews _views;
    private readonly float[]? _widened;            // [rows, vocab]: float16 logits as float32

    public LogitsBuffer(ModelMemory memory, int rows, int vocab, TensorElementType elementType)
    {
        if (elementType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new NotSupportedException($"logits of {elementType} are not supported: export with --precision fp32 or fp16");
        (_rows, _vocab) = (rows, vocab);
        int elementSize = elementType == TensorElementType.Float ? 4 : 2;
        _landing = memory.Outputs.Allocate(checked((long)rows * vocab * elementSize));
        _views = new TensorViews(_landing, elementType, elementSize);
        if (elementType == TensorElementType.Float16) _widened = new float[checked(rows * vocab)];
    }

    /// <summary>The logits of the last run, [rows, vocab].</summary>
    public Span<float> Values => _widened ?? new Span<float>((void*)_landing.Pointer, _rows * _vocab);
    public bool IsFloat16 => _widened is not null;

    /// <summary>The output to bind for a run of <paramref name="rows"/> rows and one position: [rows, 1, vocab].</summary>
    public OrtValue View(int rows) => _views.Get(0, rows, 1, _vocab);

    /// <summary>After a run bound to <see cref="View"/>: widens float16 logits into <see cref="Values"/>.</summary>
    public void Complete(int rows)
    {
        if (_widened is not null)
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((void*)_landing.Pointer, rows * _vocab), _widened.AsSpan(0, rows * _vocab));
    }

    /// <summary>After a run whose logits output was bound to host memory by ONNX Runtime (a graph with logits
    /// for every position): copies the last position of each row of [rows, positions, vocab] (or, with
    /// <paramref name="rowPositions"/>, position rowPositions[row] - 1 of each row) and releases the outputs.</summary>
    public void CopyLastPositions(OrtIoBinding binding, int rows, int positions, ReadOnlySpan<int> rowPositions = default)
    {
        using var outputs = binding.GetOutputValues();
        OrtValueLedger.TrackCreated(outputs.Count);
        using var release = new LedgerRelease(outputs.Count);
        var output = outputs[Array.IndexOf(binding.GetOutputNames(), GraphContract.Logits)];
        var values = Values;
        for (int row = 0; row < rows; row++)
        {
            int last = rowPositions.IsEmpty ? positions : rowPositions[row];
            if (last < 1 || last > positions) throw new ArgumentOutOfRangeException(nameof(rowPositions), last, $"row {row} ends outside its {positions} positions");
            long offset = ((long)row * positions + last - 1) * _vocab;
            var target = values.Slice(row * _vocab, _vocab);
            if (_widened is null) output.GetTensorDataAsSpan<float>().Slice((int)offset, _vocab).CopyTo(target);
            else TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<Float16, Half>(output.GetTensorDataAsSpan<Float16>()).Slice((int)offset, _vocab), target);
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
        if (_widened is null) output.GetTensorDataAsSpan<float>()[..target.Length].CopyTo(target);
        else TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<Float16, Half>(output.GetTensorDataAsSpan<Float16>())[..target.Length], target);
        target.Slice((positions - 1) * _vocab, _vocab).CopyTo(Values[.._vocab]);
    }

    public void Dispose()
    {
        _views.Dispose();
        _landing.Dispose();
    }
}
