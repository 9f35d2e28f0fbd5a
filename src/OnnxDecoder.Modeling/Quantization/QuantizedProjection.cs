using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Quantization;

/// <summary>
/// The initializers of one quantized weight (packed values, scales, zero points), produced lazily
/// while the model is written. The writer asks for them one after another, so the quantization runs
/// once, when the first part is written, and is dropped after the last: one tensor in memory at a time.
/// </summary>
internal sealed class LazyQuantized
{
    private readonly Func<QuantizedWeight> _produce;
    private readonly int _parts;
    private QuantizedWeight? _weight;
    private int _written;

    /// <summary>Quantizes a float32 source (a Linear [N, K], or a Conv1D [K, N] when storedInOut).</summary>
    public LazyQuantized(ITensorSource source, bool storedInOut, QuantizationOptions options, int parts)
    {
        N = storedInOut ? (int)source.Shape[1] : (int)source.Shape[0];
        K = storedInOut ? (int)source.Shape[0] : (int)source.Shape[1];
        _parts = parts;
        _produce = () => BlockQuantizer.Quantize(TensorTransforms.ReadFloats(storedInOut ? TensorTransforms.Transpose2D(source) : source), N, K, options);
    }

    /// <summary>Carries already-quantized blocks (symmetric: packed values and scales).</summary>
    public LazyQuantized(CarriedWeight carried)
    {
        (N, K, _produce, _parts) = (carried.N, carried.K, carried.Load, 2);
    }

    public int N { get; }
    public int K { get; }

    public ITensorSource Part(Func<QuantizedWeight, byte[]> bytes, ElementType type, long[] shape) =>
        TensorData.Lazy(type, shape, stream =>
        {
            var weight = _weight ??= _produce();
            stream.Write(bytes(weight));
            if (++_written % _parts == 0) _weight = null;
        });
}

/// <summary>A weight W [N, K] quantized to uint8 with one scale and zero point per row (DequantizeLinear, axis 0).</summary>
public sealed record PerChannelWeight(int N, int K, byte[] Values, float[] Scales, byte[] ZeroPoints)
{
    public float[] Dequantize()
    {
        var w = new float[(long)N * K];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) w[(long)n * K + k] = Scales[n] * (Values[(long)n * K + k] - ZeroPoints[n]);
        return w;
    }

    /// <summary>uint8 per row, by the least-error scale search (or the plain rule: symmetric max|w| / 127 with the zero
    /// point at 128, asymmetric the row's range); see <see cref="BlockScaleSearch"/>.</summary>
    public static PerChannelWeight Quantize(ReadOnlySpan<float> weight, int n, int k, bool symmetric, bool searchScales = true)
    {
        var values = new byte[(long)n * k];
        var scales = new float[n];
        var zeros = new byte[n];
        var source = weight.ToArray();
        Parallel.For(0, n, () => new int[3 * k], (row, state, scratch) =>
        {
            var r = source.AsSpan(row * k, k);
            var q = scratch.AsSpan(0, k);
            int zero;
            _ = searchScales
                ? BlockScaleSearch.Search(r, 8, symmetric, q, scratch.AsSpan(k, k), scratch.AsSpan(2 * k, k), out scales[row], out zero)
                : BlockScaleSearch.Plain(r, 8, symmetric, q, out scales[row], out zero);
            zeros[row] = (byte)zero;
            for (int i = 0; i < k; i++) values[(long)row * k + i] = (byte)q[i];
            return scratch;
        }, _ => { });
        return new PerChannelWeight(n, k, values, scales, zeros);
    }
}

/// <summary>The initializers of a per-channel uint8 weight (<paramref name="parts"/> of them), quantized once while written.</summary>
internal sealed class LazyPerChannel(ITensorSource source, bool storedInOut, bool symmetric, bool searchScales, int parts = 3)
{
    private PerChannelWeight? _weight;
    private int _written;

    public int N { get; } = storedInOut ? (int)source.Shape[1] : (int)source.Shape[0];
    public int K { get; } = storedInOut ? (int)source.Shape[0] : (int)source.Shape[1];

    public ITensorSource Part(Func<PerChannelWeight, byte[]> bytes, ElementType type, long[] shape) =>
        TensorData.Lazy(type, shape, stream =>
        {
            _weight ??= PerChannelWeight.Quantize(TensorTransforms.ReadFloats(storedInOut ? TensorTransforms.Transpose2D(source) : source), N, K, symmetric, searchScales);
            stream.Write(bytes(_weight));
            if (++_written % parts == 0) _weight = null;
        });
}
