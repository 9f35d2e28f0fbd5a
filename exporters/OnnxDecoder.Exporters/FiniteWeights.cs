using System.Runtime.InteropServices;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters;

/// <summary>
/// Wraps a checkpoint so that every float32 tensor is checked for NaN and infinity as it streams
/// into the model: a damaged checkpoint fails the export (which then writes nothing) with the
/// tensor and the element named, instead of producing a model that generates garbage.
/// </summary>
public sealed class FiniteWeights(IWeightSource inner, string source) : Modeling.Quantization.IQuantizedWeightSource
{
    public Modeling.Quantization.CarriedWeight? TryCarry(string name, Modeling.Quantization.QuantizationOptions options)
    {
        if (inner is not Modeling.Quantization.IQuantizedWeightSource native || native.TryCarry(name, options) is not { } carried) return null;
        return carried with
        {
            Load = () =>
            {
                var weight = carried.Load();
                for (int i = 0; i < weight.Scales.Length; i++)
                    if (!float.IsFinite(weight.Scales[i]))
                        throw new ModelFormatException(source, $"tensor '{name}' has a non-finite block scale at block {i}: the checkpoint is damaged (export with --allow-non-finite to keep it anyway)");
                return weight;
            },
        };
    }

    public IReadOnlyCollection<string> Names => inner.Names;

    public ITensorSource Get(string name)
    {
        var tensor = inner.Get(name);
        if (tensor.ElementType != ElementType.Float) return tensor;
        return TensorData.Lazy(tensor.ElementType, [.. tensor.Shape], stream => tensor.WriteTo(new CheckingStream(stream, name, source)));
    }

    private sealed class CheckingStream(Stream destination, string tensor, string source) : WriteOnlyStream
    {
        private readonly byte[] _carry = new byte[4];
        private int _carried;
        private long _elements;

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            var rest = buffer;
            while (_carried > 0 && rest.Length > 0)
            {
                _carry[_carried++] = rest[0];
                rest = rest[1..];
                if (_carried == 4) { Check(MemoryMarshal.Cast<byte, float>(_carry.AsSpan())); _carried = 0; }
            }
            int whole = rest.Length / 4 * 4;
            Check(MemoryMarshal.Cast<byte, float>(rest[..whole]));
            rest[whole..].CopyTo(_carry);
            _carried = rest.Length - whole;
            destination.Write(buffer);
        }

        private void Check(ReadOnlySpan<float> values)
        {
            for (int i = 0; i < values.Length; i++)
                if (!float.IsFinite(values[i]))
                    throw new ModelFormatException(source, $"tensor '{tensor}' holds {(float.IsNaN(values[i]) ? "NaN" : "an infinity")} at element {_elements + i}: the checkpoint is damaged (export with --allow-non-finite to keep it anyway)");
            _elements += values.Length;
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Flush() => destination.Flush();
    }
}
