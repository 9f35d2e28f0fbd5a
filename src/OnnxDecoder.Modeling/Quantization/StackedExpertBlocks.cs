using System.Runtime.InteropServices;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Quantization;

/// <summary>
/// Stacked experts [experts, out, in] quantized per block of the input dimension, expert by expert, in the layout of
/// com.microsoft QMoE (each expert's rows as MatMulNBits stores a weight):
/// <code>
///   {name}.quantized  uint8   [experts, out, in * bits / 8]   4-bit: two values a byte, the lower index in the low nibble
///   {name}.scales     float32 [experts, out, in / block]      symmetric: w = scale (q - 2^(bits - 1))
/// </code>
/// Each initializer streams the source one expert at a time and quantizes it again (memory stays at one expert; a
/// real checkpoint's stacked experts exceed what one array holds).
/// </summary>
internal static class StackedExpertBlocks
{
    public static (Value Packed, Value Scales) Initializers(GraphBuilder b, string name, ITensorSource source, QuantizationOptions q)
    {
        if (source.Shape.Count != 3 || source.ElementType != ElementType.Float)
            throw new ArgumentException($"'{name}': expected float stacked experts [experts, out, in], got {source.ElementType} [{string.Join(", ", source.Shape)}]");
        long experts = source.Shape[0], rows = source.Shape[1], inputs = source.Shape[2];
        if (inputs % q.BlockSize != 0) throw new ArgumentException($"'{name}': the input width {inputs} is not a multiple of the block size {q.BlockSize}");
        int n = checked((int)rows), k = checked((int)inputs);
        _ = checked(n * k);
        var packed = b.Initializer(name + ".quantized", TensorData.Lazy(ElementType.UInt8, [experts, rows, inputs * q.Bits / 8],
            stream => EachExpert(source, n, k, q, weight => stream.Write(weight.Packed))));
        var scales = b.Initializer(name + ".scales", TensorData.Lazy(ElementType.Float, [experts, rows, inputs / q.BlockSize],
            stream => EachExpert(source, n, k, q, weight => stream.Write(MemoryMarshal.AsBytes(weight.Scales.AsSpan())))));
        return (packed, scales);
    }

    private static void EachExpert(ITensorSource source, int n, int k, QuantizationOptions q, Action<QuantizedWeight> write)
    {
        var chunks = new ExpertChunks(n * k, expert => write(BlockQuantizer.Quantize(expert, n, k, q)));
        source.WriteTo(chunks);
        chunks.Finish();
    }

    /// <summary>Collects one expert's float32 bytes at a time and hands each complete expert on.</summary>
    private sealed class ExpertChunks(int expertElements, Action<float[]> onExpert) : WriteOnlyStream
    {
        private readonly float[] _expert = new float[expertElements];
        private int _filledBytes;

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            var bytes = MemoryMarshal.AsBytes(_expert.AsSpan());
            while (buffer.Length > 0)
            {
                int take = Math.Min(buffer.Length, bytes.Length - _filledBytes);
                buffer[..take].CopyTo(bytes[_filledBytes..]);
                _filledBytes += take;
                buffer = buffer[take..];
                if (_filledBytes < bytes.Length) continue;
                onExpert(_expert);
                _filledBytes = 0;
            }
        }

        public void Finish()
        {
            if (_filledBytes != 0) throw new InvalidOperationException($"the stacked experts ended {_filledBytes} bytes into an expert");
        }
    }
}
