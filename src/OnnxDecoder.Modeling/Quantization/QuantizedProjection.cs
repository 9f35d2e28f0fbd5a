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

    /// <summary>Round-to-nearest uint8 per row; symmetric keeps the zero point at 128 (and never uses 0).</summary>
    public static PerChannelWeight Quantize(ReadOnlySpan<float> weight, int n, int k, bool symmetric)
    {
        var values = new byte[(long)n * k];
        var scales = new float[n];
        var zeros = new byte[n];
        for (int row = 0; row < n; row++)
        {
            var r = weight.Slice(row * k, k);
            float scale;
            int zero;
            if (symmetric)
            {
                float max = 0;
                foreach (var v in r) max = Math.Max(max, Math.Abs(v));
                (scale, zero) = (max / 127, 128);
            }
            else
            {
                float min = 0, max = 0;
                foreach (var v in r) { min = Math.Min(min, v); max = Math.Max(max, v); }
                scale = (max - min) / 255;
                zero = scale == 0 ? 0 : Math.Clamp((int)MathF.Round(-min / scale), 0, 255);
            }
            scales[row] = scale;
            zeros[row] = (byte)zero;
            float inverse = scale == 0 ? 0 : 1 / scale;
            for (int i = 0; i < k; i++) values[(long)row * k + i] = (byte)Math.Clamp((int)MathF.Round(r[i] * inverse) + zero, 0, 255);
        }
        return new PerChannelWeight(n, k, values, scales, zeros);
    }
}

/// <summary>The three initializers of a per-channel uint8 weight, quantized once while written.</summary>
internal sealed class LazyPerChannel(ITensorSource source, bool storedInOut, bool symmetric)
{
    private PerChannelWeight? _weight;
    private int _written;

    public int N { get; } = storedInOut ? (int)source.Shape[1] : (int)source.Shape[0];
    public int K { get; } = storedInOut ? (int)source.Shape[0] : (int)source.Shape[1];

    public ITensorSource Part(Func<PerChannelWeight, byte[]> bytes, ElementType type, long[] shape) =>
        TensorData.Lazy(type, shape, stream =>
        {
            _weight ??= PerChannelWeight.Quantize(TensorTransforms.ReadFloats(storedInOut ? TensorTransforms.Transpose2D(source) : source), N, K, symmetric);
            stream.Write(bytes(_weight));
            if (++_written % 3 == 0) _weight = null;
        });
}
