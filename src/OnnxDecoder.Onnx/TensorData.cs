using System.Runtime.InteropServices;

namespace OnnxDecoder.Onnx;

/// <summary>
/// The bytes of one initializer, produced on demand. The model writer asks each source once, in
/// order, to write its bytes to the output, so a model's weights never have to be in memory at once.
/// </summary>
public interface ITensorSource
{
    ElementType ElementType { get; }

    /// <summary>Dimensions, outermost first.</summary>
    IReadOnlyList<long> Shape { get; }

    /// <summary>Exact number of bytes <see cref="WriteTo"/> writes (little-endian, row-major).</summary>
    long ByteLength { get; }

    /// <summary>Writes exactly <see cref="ByteLength"/> bytes. May be called more than once.</summary>
    void WriteTo(Stream destination);
}

/// <summary>Factories for tensor sources.</summary>
public static class TensorData
{
    /// <summary>A tensor that copies <paramref name="values"/> now (for small tensors and tests).</summary>
    public static ITensorSource From<T>(ReadOnlySpan<T> values, params long[] shape) where T : unmanaged =>
        new BytesSource(TypeOf<T>(), shape, MemoryMarshal.AsBytes(values).ToArray(), values.Length);

    /// <summary>A tensor over raw little-endian bytes (copied now).</summary>
    public static ITensorSource FromBytes(ElementType type, ReadOnlySpan<byte> bytes, params long[] shape) =>
        new BytesSource(type, shape, bytes.ToArray(), null);

    /// <summary>
    /// A tensor whose bytes are produced only when written: <paramref name="write"/> receives the
    /// destination and must write exactly the tensor's byte length. Use it for weights read from a
    /// checkpoint or generated, so saving never holds more than one tensor.
    /// </summary>
    public static ITensorSource Lazy(ElementType type, long[] shape, Action<Stream> write) => new LazySource(type, shape, write);

    /// <summary>
    /// A float32 tensor generated chunk by chunk: <paramref name="fill"/> gets the flat index of the
    /// chunk's first element and the chunk to fill. Peak memory is one chunk, whatever the size.
    /// </summary>
    public static ITensorSource Generated(long[] shape, Action<long, Span<float>> fill, int chunkElements = 1 << 16) =>
        Lazy(ElementType.Float, shape, stream =>
        {
            long total = ElementTypes.ElementCount(shape);
            var chunk = new float[(int)Math.Min(chunkElements, Math.Max(total, 1))];
            for (long start = 0; start < total; start += chunk.Length)
            {
                int count = (int)Math.Min(chunk.Length, total - start);
                var span = chunk.AsSpan(0, count);
                fill(start, span);
                stream.Write(MemoryMarshal.AsBytes(span));
            }
        });

    public static ElementType TypeOf<T>() where T : unmanaged => typeof(T) switch
    {
        var t when t == typeof(float) => ElementType.Float,
        var t when t == typeof(double) => ElementType.Double,
        var t when t == typeof(Half) => ElementType.Float16,
        var t when t == typeof(long) => ElementType.Int64,
        var t when t == typeof(int) => ElementType.Int32,
        var t when t == typeof(short) => ElementType.Int16,
        var t when t == typeof(ushort) => ElementType.UInt16,
        var t when t == typeof(uint) => ElementType.UInt32,
        var t when t == typeof(ulong) => ElementType.UInt64,
        var t when t == typeof(byte) => ElementType.UInt8,
        var t when t == typeof(sbyte) => ElementType.Int8,
        var t when t == typeof(bool) => ElementType.Bool,
        _ => throw new NotSupportedException($"no ONNX element type for {typeof(T).Name}"),
    };

    /// <summary>Reads a source fully into memory (for small tensors).</summary>
    public static byte[] ToArray(this ITensorSource source)
    {
        if (source.ByteLength > Array.MaxLength) throw new InvalidOperationException($"tensor of {source.ByteLength} bytes is too large to hold in one array");
        var stream = new MemoryStream((int)source.ByteLength);
        source.WriteTo(stream);
        if (stream.Length != source.ByteLength)
            throw new InvalidDataException($"tensor source wrote {stream.Length} bytes, expected {source.ByteLength}");
        return stream.ToArray();
    }

    private sealed class BytesSource : ITensorSource
    {
        private readonly byte[] _bytes;

        public BytesSource(ElementType type, long[] shape, byte[] bytes, long? elementCount)
        {
            long expectedCount = ElementTypes.ElementCount(shape);
            if (elementCount is { } count && count != expectedCount)
                throw new ArgumentException($"{count} values do not fill shape [{string.Join(", ", shape)}] ({expectedCount} elements)");
            if (bytes.LongLength != type.ByteLength(expectedCount))
                throw new ArgumentException($"{bytes.Length} bytes do not fill a {type} tensor of shape [{string.Join(", ", shape)}]");
            ElementType = type;
            Shape = shape.ToArray();
            _bytes = bytes;
        }

        public ElementType ElementType { get; }
        public IReadOnlyList<long> Shape { get; }
        public long ByteLength => _bytes.LongLength;
        public void WriteTo(Stream destination) => destination.Write(_bytes);
        internal ReadOnlySpan<byte> Bytes => _bytes;
    }

    private sealed class LazySource(ElementType type, long[] shape, Action<Stream> write) : ITensorSource
    {
        public ElementType ElementType { get; } = type;
        public IReadOnlyList<long> Shape { get; } = shape.ToArray();
        public long ByteLength { get; } = type.ByteLength(ElementTypes.ElementCount(shape));
        public void WriteTo(Stream destination) => write(destination);
    }
}
