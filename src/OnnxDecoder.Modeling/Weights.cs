using System.Runtime.InteropServices;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling;

/// <summary>A tensor a family expects, by its name in the family's Hugging Face layout.</summary>
public sealed record TensorSpec(string Name, long[] Shape)
{
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>Named tensors in a family's Hugging Face layout, read lazily (a checkpoint, or memory).</summary>
public interface IWeightSource
{
    IReadOnlyCollection<string> Names { get; }
    ITensorSource Get(string name);
}

/// <summary>Weights held in memory as float32 arrays (tests, synthetic checkpoints).</summary>
public sealed class InMemoryWeights : IWeightSource
{
    private readonly Dictionary<string, (float[] Values, long[] Shape)> _tensors = new(StringComparer.Ordinal);

    public IReadOnlyCollection<string> Names => _tensors.Keys;

    public void Add(string name, float[] values, params long[] shape)
    {
        if (values.LongLength != ElementTypes.ElementCount(shape))
            throw new ArgumentException($"{name}: {values.Length} values do not fill shape [{string.Join(", ", shape)}]");
        _tensors[name] = (values, shape);
    }

    public float[] Values(string name) => _tensors[name].Values;
    public long[] Shape(string name) => _tensors[name].Shape;

    public ITensorSource Get(string name) => _tensors.TryGetValue(name, out var t)
        ? TensorData.From<float>(t.Values, t.Shape)
        : throw new KeyNotFoundException($"weight '{name}' is missing");

    /// <summary>Seeded random weights for every tensor a family expects: uniform in ±1/sqrt(fan-in)
    /// for matrices, 1 ± 0.1 for norm scales, small values for biases.</summary>
    public static InMemoryWeights Random(IEnumerable<TensorSpec> specs, int seed)
    {
        var weights = new InMemoryWeights();
        var random = new Random(seed);
        foreach (var spec in specs)
        {
            var values = new float[ElementTypes.ElementCount(spec.Shape)];
            bool isNorm = spec.Name.Contains("norm", StringComparison.Ordinal) || spec.Name.Contains(".ln_", StringComparison.Ordinal) || spec.Name.Contains("ln_f", StringComparison.Ordinal);
            bool isBias = spec.Name.EndsWith(".bias", StringComparison.Ordinal);
            double scale = spec.Shape.Length >= 2 ? 1.0 / Math.Sqrt(spec.Shape[^1]) * 1.7 : 0.1;
            for (int i = 0; i < values.Length; i++)
            {
                double u = random.NextDouble() * 2 - 1;
                values[i] = (float)(isNorm && !isBias ? 1 + 0.1 * u : isBias ? 0.1 * u : scale * u);
            }
            weights.Add(spec.Name, values, spec.Shape);
        }
        return weights;
    }
}

/// <summary>Lazy reshaping of weights on their way into the graph (each reads one tensor at a time).</summary>
public static class TensorTransforms
{
    /// <summary>A 2-D tensor [rows, cols] written as [cols, rows]: PyTorch Linear [out, in] to MatMul [in, out].</summary>
    public static ITensorSource Transpose2D(ITensorSource source)
    {
        if (source.Shape.Count != 2) throw new ArgumentException($"Transpose2D needs a 2-D tensor, got [{string.Join(", ", source.Shape)}]");
        long rows = source.Shape[0], cols = source.Shape[1];
        int size = source.ElementType.SizeOf();
        return TensorData.Lazy(source.ElementType, [cols, rows], stream =>
        {
            byte[] input = source.ToArray();
            byte[] output = new byte[input.Length];
            for (long r = 0; r < rows; r++)
                for (long c = 0; c < cols; c++)
                    Buffer.BlockCopy(input, (int)((r * cols + c) * size), output, (int)((c * rows + r) * size), size);
            stream.Write(output);
        });
    }

    /// <summary>Several tensors concatenated along axis 0 (e.g. experts stacked into [E, ...]).</summary>
    public static ITensorSource Stack(IReadOnlyList<ITensorSource> parts)
    {
        var first = parts[0];
        if (parts.Any(p => p.ElementType != first.ElementType || !p.Shape.SequenceEqual(first.Shape)))
            throw new ArgumentException("stacked tensors must share element type and shape");
        return TensorData.Lazy(first.ElementType, [parts.Count, .. first.Shape], stream =>
        {
            foreach (var part in parts) part.WriteTo(stream);
        });
    }

    /// <summary>Tensors of one element type and trailing shape concatenated along axis 0 ([N_i, ..] -> [sum N_i, ..]):
    /// Linear weights fused along their output rows, or their 1-D biases.</summary>
    public static ITensorSource ConcatRows(IReadOnlyList<ITensorSource> parts)
    {
        var first = parts[0];
        if (parts.Any(p => p.ElementType != first.ElementType || p.Shape.Count != first.Shape.Count || !p.Shape.Skip(1).SequenceEqual(first.Shape.Skip(1))))
            throw new ArgumentException("concatenated tensors must share element type and every dimension but the first");
        return TensorData.Lazy(first.ElementType, [parts.Sum(p => p.Shape[0]), .. first.Shape.Skip(1)], stream =>
        {
            foreach (var part in parts) part.WriteTo(stream);
        });
    }

    /// <summary>Rows of <paramref name="source"/> interleaved from two tensors: row 2i from a, 2i+1 from b.</summary>
    public static ITensorSource InterleaveRows(ITensorSource a, ITensorSource b)
    {
        if (!a.Shape.SequenceEqual(b.Shape) || a.Shape.Count != 2) throw new ArgumentException("InterleaveRows needs two 2-D tensors of one shape");
        long rows = a.Shape[0];
        long rowBytes = a.ByteLength / Math.Max(rows, 1);
        return TensorData.Lazy(a.ElementType, [2 * rows, a.Shape[1]], stream =>
        {
            byte[] left = a.ToArray(), right = b.ToArray();
            for (long r = 0; r < rows; r++)
            {
                stream.Write(left, (int)(r * rowBytes), (int)rowBytes);
                stream.Write(right, (int)(r * rowBytes), (int)rowBytes);
            }
        });
    }

    /// <summary>
    /// A float32 tensor written as float16 (round to nearest even), converted as it streams. A value
    /// beyond float16's range (+-65504) fails the export naming the tensor instead of becoming infinity.
    /// </summary>
    public static ITensorSource ToFloat16(ITensorSource source, string name)
    {
        if (source.ElementType == ElementType.Float16) return source;
        if (source.ElementType != ElementType.Float) throw new ArgumentException($"tensor '{name}' is {source.ElementType}; only float32 tensors convert to float16");
        return TensorData.Lazy(ElementType.Float16, [.. source.Shape], stream =>
        {
            using var converter = new Float16Writer(stream, name);
            source.WriteTo(converter);
            converter.Finish();
        });
    }

    /// <summary>A write-only stream that takes float32 bytes and writes float16 bytes to the destination.</summary>
    private sealed class Float16Writer(Stream destination, string name) : WriteOnlyStream
    {
        private readonly byte[] _pending = new byte[4];
        private readonly byte[] _output = new byte[1 << 15];
        private int _pendingCount;

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> bytes)
        {
            while (_pendingCount > 0 && _pendingCount < 4 && bytes.Length > 0)
            {
                _pending[_pendingCount++] = bytes[0];
                bytes = bytes[1..];
                if (_pendingCount == 4) { Convert(_pending); _pendingCount = 0; }
            }
            int whole = bytes.Length / 4 * 4;
            Convert(bytes[..whole]);
            bytes[whole..].CopyTo(_pending);
            _pendingCount = bytes.Length - whole;
        }

        private void Convert(ReadOnlySpan<byte> floatBytes)
        {
            var floats = MemoryMarshal.Cast<byte, float>(floatBytes);
            while (floats.Length > 0)
            {
                int n = Math.Min(floats.Length, _output.Length / 2);
                var halves = MemoryMarshal.Cast<byte, Half>(_output.AsSpan(0, n * 2));
                for (int i = 0; i < n; i++)
                {
                    var h = (Half)floats[i];
                    if (Half.IsInfinity(h) && float.IsFinite(floats[i]))
                        throw new InvalidDataException($"tensor '{name}' holds {floats[i]}, beyond float16's range (+-65504): export it with --precision fp32");
                    halves[i] = h;
                }
                destination.Write(_output, 0, n * 2);
                floats = floats[n..];
            }
        }

        public void Finish()
        {
            if (_pendingCount != 0) throw new InvalidDataException($"tensor '{name}' is not a whole number of float32 values");
        }

    }

    /// <summary>float32 values of a small tensor.</summary>
    public static float[] ReadFloats(ITensorSource source)
    {
        if (source.ElementType != ElementType.Float) throw new ArgumentException($"expected a float32 tensor, got {source.ElementType}");
        return MemoryMarshal.Cast<byte, float>(source.ToArray()).ToArray();
    }
}
