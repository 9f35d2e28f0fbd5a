namespace OnnxDecoder.Modeling.Quantization;

/// <summary>
/// A weight source that already holds some weights in a block format MatMulNBits can take as it is
/// (GGUF Q4_0 and Q8_0): those weights skip dequantization and requantization.
/// </summary>
public interface IQuantizedWeightSource : IWeightSource
{
    /// <summary>When the stored blocks of <paramref name="name"/> match <paramref name="options"/>: the
    /// weight's [N, K] and a loader that produces it in MatMulNBits form (called while writing); else null.</summary>
    CarriedWeight? TryCarry(string name, QuantizationOptions options);
}

/// <summary>A weight whose stored blocks go into the model as they are, read when written.</summary>
public sealed record CarriedWeight(int N, int K, Func<QuantizedWeight> Load);
