using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime;

/// <summary>
/// The inputs of the runtime's form of a graph (<see cref="DirectLengthsGraph"/>) for one run, computed from the host's
/// attention mask [rows, total] exactly as the exported graph computes them: seqlens_k [rows] (each row's last column
/// whose mask is 1; 0 for a row without one), total_sequence_length [] (the mask's width), and attention_bias
/// [rows or 1, 1, S, total] (0 where the mask is 1, the activation type's lowest value elsewhere, the same for every
/// query). A run whose rows have no zero before their last 1 binds one row of zeros instead: GroupQueryAttention never
/// attends past a row's seqlens_k, so the bias beyond it changes nothing. Owns its pinned host arrays and their views.
/// </summary>
internal sealed class DirectLengthInputs : IDisposable
{
    private const int MaxCachedViews = 4096; // one-token bias views kept (one per width); wider contexts make the rest per run
    private const long MaxRetainedBiasBytes = 16L << 20; // the largest bias of a wider run the step keeps between runs
    private readonly int[] _seqlensK;      // [rows]
    private readonly int[] _total = GC.AllocateArray<int>(1, pinned: true); // []
    private readonly OrtValue _totalView;
    private readonly Dictionary<int, OrtValue> _seqlensViews = [];          // by rows
    private readonly TensorElementType? _biasType;                         // null: the graph takes no bias
    private readonly int _biasBytes;                                       // bytes per bias element
    private readonly byte[] _decodeZeros;                                   // [max_length] zeros: the bias of one-token runs
    private readonly Dictionary<int, OrtValue> _decodeZeroViews = [];      // [1, 1, 1, total] by total
    private byte[] _runBias = [];                                          // [rows or 1, 1, S, total] of wider or padded runs
    private readonly bool _rebind;                                         // bind every run (a device provider copies at bind time)
    private OrtValue? _boundSeqlens, _boundTotal;

    /// <param name="rebind">Bind every value before every run: a device provider copies host values when they are bound.</param>
    public DirectLengthInputs(int rows, int maxLength, TensorElementType? biasType, bool rebind)
    {
        _rebind = rebind;
        _seqlensK = GC.AllocateArray<int>(rows, pinned: true);
        _biasType = biasType;
        _biasBytes = biasType switch
        {
            null => 0,
            TensorElementType.Float => 4,
            TensorElementType.Float16 => 2,
            _ => throw new ArgumentOutOfRangeException(nameof(biasType), biasType, "the attention bias is float32 or float16"),
        };
        _decodeZeros = GC.AllocateArray<byte>(checked(maxLength * _biasBytes), pinned: true);
        _totalView = OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(_total, Array.Empty<long>()));
    }

    /// <summary>
    /// Binds the run's direct inputs. <paramref name="mask"/> is [rows, total]; <paramref name="padded"/> says a row may
    /// have a zero before its last 1 (left padding): then the bias is written from the mask, else one row of zeros is
    /// bound. Views made for this run alone go to <paramref name="transient"/>, which the caller releases after the run.
    /// </summary>
    public void Bind(OrtIoBinding binding, ReadOnlySpan<long> mask, int rows, int sequence, int total, bool padded, List<OrtValue> transient)
    {
        for (int row = 0; row < rows; row++) _seqlensK[row] = LastAttendedColumn(mask.Slice(row * total, total));
        _total[0] = total;
        if (!_seqlensViews.TryGetValue(rows, out var seqlens))
            _seqlensViews[rows] = seqlens = OrtValueLedger.Track(
                OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _seqlensK.AsMemory(0, rows), [rows]));
        Bind(binding, GraphContract.DirectSeqlensK, ref _boundSeqlens, seqlens);
        Bind(binding, GraphContract.DirectTotalSequenceLength, ref _boundTotal, _totalView);
        if (_biasType is not { } type) return;
        OrtValue bias;
        if (!padded && sequence == 1)
        {
            if (!_decodeZeroViews.TryGetValue(total, out bias!))
            {
                bias = Track(type, [1, 1, 1, total], _decodeZeros, total);
                if (_decodeZeroViews.Count < MaxCachedViews) _decodeZeroViews[total] = bias;
                else transient.Add(bias);
            }
        }
        else
        {
            int biasRows = padded ? rows : 1;
            long elements = checked((long)biasRows * sequence * total), bytes = elements * _biasBytes;
            long[] shape = [biasRows, 1, sequence, total];
            if (bytes > int.MaxValue)
                throw new InvalidOperationException(
                    $"a run of {sequence} new tokens over {total} columns needs an attention bias of {bytes:N0} bytes: prefill in chunks (PrefillChunk)");
            Span<byte> data;
            if (bytes <= MaxRetainedBiasBytes)
            {
                if (bytes > _runBias.LongLength) _runBias = GC.AllocateArray<byte>((int)bytes, pinned: true);
                bias = Track(type, shape, _runBias, elements);
                data = _runBias.AsSpan(0, (int)bytes);
            }
            else
            {
                // A long prompt's bias lives for its run alone, in ONNX Runtime's memory, rather than staying with the step.
                bias = OrtValueLedger.Track(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape));
                data = type == TensorElementType.Float ? MemoryMarshal.AsBytes(bias.GetTensorMutableDataAsSpan<float>())
                    : MemoryMarshal.AsBytes(bias.GetTensorMutableDataAsSpan<Float16>());
            }
            transient.Add(bias);
            if (padded) FillPaddingBias(data, type, mask, rows, sequence, total);
            else data.Clear();
        }
        binding.BindInput(GraphContract.DirectAttentionBias, bias);
    }

    /// <summary>seqlens_k of one mask row: its last column whose mask is 1, 0 when none is (as ReduceMax over mask x column).</summary>
    private static int LastAttendedColumn(ReadOnlySpan<long> maskRow) => Math.Max(0, maskRow.LastIndexOf(1L));

    /// <summary>bias[row, 0, s, t] = mask[row, t] == 1 ? 0 : lowest, for every query s, into <paramref name="bias"/>'s bytes.</summary>
    private static void FillPaddingBias(Span<byte> bias, TensorElementType type, ReadOnlySpan<long> mask, int rows, int sequence, int total)
    {
        if (type == TensorElementType.Float) Fill(MemoryMarshal.Cast<byte, float>(bias), mask, rows, sequence, total, 0f, float.MinValue);
        else Fill(MemoryMarshal.Cast<byte, Half>(bias), mask, rows, sequence, total, (Half)0f, Half.MinValue);

        static void Fill<T>(Span<T> bias, ReadOnlySpan<long> mask, int rows, int sequence, int total, T allowed, T padding)
        {
            for (int row = 0; row < rows; row++)
            {
                var first = bias.Slice(row * sequence * total, total);
                var rowMask = mask.Slice(row * total, total);
                for (int t = 0; t < total; t++) first[t] = rowMask[t] == 1 ? allowed : padding;
                for (int s = 1; s < sequence; s++) first.CopyTo(bias.Slice((row * sequence + s) * total, total));
            }
        }
    }

    /// <summary>
    /// The direct inputs of one InferenceSession.Run over a left-padded prefill (mask [rows, sequence], no past), as new
    /// tracked values over new arrays; the caller releases the values after the run (the arrays live as long as the values
    /// that pin them).
    /// </summary>
    public static List<(string Name, OrtValue Value)> ForPrefill(ReadOnlySpan<long> mask, int rows, int sequence, TensorElementType? biasType)
    {
        var seqlensK = new int[rows];
        for (int row = 0; row < rows; row++) seqlensK[row] = LastAttendedColumn(mask.Slice(row * sequence, sequence));
        var values = new List<(string, OrtValue)>
        {
            (GraphContract.DirectSeqlensK, OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(seqlensK, [rows]))),
            (GraphContract.DirectTotalSequenceLength, OrtValueLedger.Track(OrtValue.CreateTensorValueFromMemory(new[] { sequence }, Array.Empty<long>()))),
        };
        if (biasType is { } type)
        {
            long[] shape = [rows, 1, sequence, sequence];
            int elements = checked(rows * sequence * sequence);
            OrtValue bias;
            if (type == TensorElementType.Float)
            {
                var floats = new float[elements];
                FillPaddingBias(MemoryMarshal.AsBytes(floats.AsSpan()), type, mask, rows, sequence, sequence);
                bias = OrtValue.CreateTensorValueFromMemory(floats, shape);
            }
            else
            {
                var halves = new Float16[elements];
                FillPaddingBias(MemoryMarshal.AsBytes(halves.AsSpan()), type, mask, rows, sequence, sequence);
                bias = OrtValue.CreateTensorValueFromMemory(halves, shape);
            }
            values.Add((GraphContract.DirectAttentionBias, OrtValueLedger.Track(bias)));
        }
        return values;
    }

    private OrtValue Track(TensorElementType type, long[] shape, byte[] pinned, long elements) =>
        OrtValueLedger.Track(OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, type, shape,
            Marshal.UnsafeAddrOfPinnedArrayElement(pinned, 0), elements * _biasBytes));

    private void Bind(OrtIoBinding binding, string name, ref OrtValue? bound, OrtValue value)
    {
        if (ReferenceEquals(bound, value) && !_rebind) return;
        binding.BindInput(name, value);
        bound = value;
    }

    public void Dispose()
    {
        foreach (var view in _seqlensViews.Values) OrtValueLedger.Release(view);
        foreach (var view in _decodeZeroViews.Values) OrtValueLedger.Release(view);
        _seqlensViews.Clear();
        _decodeZeroViews.Clear();
        OrtValueLedger.Release(_totalView);
    }
}
