using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters;

/// <summary>A checkpoint's tensors do not match what the family expects.</summary>
public sealed class WeightMismatchException(string source, string problem) : ModelFormatException(source, problem);

/// <summary>
/// Checks a checkpoint's tensors against the family's expected list: every expected tensor present
/// with its exact shape, nothing extra. The first problem is reported with the tensor's name and
/// both shapes.
/// </summary>
public static class WeightMap
{
    public static void Validate(DecoderConfig config, IWeightSource weights, string source, IReadOnlySet<string>? ignoredExtras = null)
    {
        var expected = FamilyRegistry.For(config).ExpectedWeights(config);
        var present = weights.Names.ToHashSet(StringComparer.Ordinal);
        foreach (var spec in expected)
        {
            if (!present.Contains(spec.Name))
                throw new WeightMismatchException(source, $"missing tensor '{spec.Name}' (expected shape {spec.ShapeText})");
            var actual = weights.Get(spec.Name).Shape;
            if (!actual.SequenceEqual(spec.Shape))
                throw new WeightMismatchException(source, $"tensor '{spec.Name}' has shape [{string.Join(", ", actual)}], expected {spec.ShapeText}");
        }
        var expectedNames = expected.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        var extra = present.Where(n => !expectedNames.Contains(n) && ignoredExtras?.Contains(n) != true).Order(StringComparer.Ordinal).FirstOrDefault();
        if (extra is not null)
            throw new WeightMismatchException(source, $"unexpected tensor '{extra}' with shape [{string.Join(", ", weights.Get(extra).Shape)}]: the config does not describe it (a different architecture, or a config field missing?)");
    }
}
