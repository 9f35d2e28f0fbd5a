using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>RMSNorm and LayerNorm over the last axis, and the residual-add + norm pair.</summary>
public static class Norm
{
    /// <summary>Normalises x [B, S, hidden] with the scale {prefix}.weight (and {prefix}.bias for LayerNorm).</summary>
    public static Value Apply(DecoderGraph g, Value x, string prefix)
    {
        var b = g.B;
        float eps = (float)g.Config.NormEps;
        if (g.Config.Norm == NormKind.LayerNorm)
            return b.Op("LayerNormalization", [x, g.Weight(prefix + ".weight"), g.Weight(prefix + ".bias")], Attr.Int("axis", -1), Attr.Float("epsilon", eps));
        return g.Lowering.RmsNorm(g, x, () => RmsScale(g, prefix), eps);
    }

    /// <summary>The RMSNorm scale: {prefix}.weight, or 1 + weight for Gemma's norms (ONNX Runtime folds the Add).</summary>
    public static Value RmsScale(DecoderGraph g, string prefix) => g.Config.NormScalePlusOne
        ? g.B.Op("Add", [g.Weight(prefix + ".weight"), g.Scalar(1)])
        : g.Weight(prefix + ".weight");

    /// <summary>(residual + delta, Norm(residual + delta)); the ort lowering fuses both for RMSNorm models.</summary>
    public static (Value Sum, Value Normed) ResidualThenNorm(DecoderGraph g, Value residual, Value delta, string prefix)
    {
        if (g.Config.Norm == NormKind.RmsNorm)
            return g.Lowering.ResidualThenRmsNorm(g, residual, delta, () => RmsScale(g, prefix), (float)g.Config.NormEps);
        var sum = g.B.Op("Add", [residual, delta]);
        return (sum, Apply(g, sum, prefix));
    }
}
