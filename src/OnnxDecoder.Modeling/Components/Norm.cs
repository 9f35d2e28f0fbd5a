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

        // ONNX Runtime registers SimplifiedLayerNormalization in the default domain (since version 1),
        // unlike its Skip- sibling, which lives in com.microsoft.
        if (g.Ort)
            return b.Op("SimplifiedLayerNormalization", [x, g.Weight(prefix + ".weight")], Attr.Int("axis", -1), Attr.Float("epsilon", eps));

        //   x ──Mul(x,x)──ReduceMean(-1)──Add(eps)──Sqrt──Reciprocal──┐
        //   └────────────────────────────────────────────────────Mul──Mul(weight)
        // With float16 activations the statistics and the scaling run in float32 (cast in, cast out).
        var x32 = g.ToFloat32(x);
        var meanSquare = g.Reduce("ReduceMean", b.Op("Mul", [x32, x32]), [-1], keepDims: true);                        // [B, S, 1]
        var inverseRms = b.Op("Reciprocal", [b.Op("Sqrt", [b.Op("Add", [meanSquare, b.FloatScalar(eps)])])]);          // [B, S, 1]
        return b.Op("Mul", [g.FromFloat32(b.Op("Mul", [x32, inverseRms])), g.Weight(prefix + ".weight")]);            // [B, S, hidden]
    }

    /// <summary>(residual + delta, Norm(residual + delta)); the ort lowering fuses both into
    /// SkipSimplifiedLayerNormalization for RMSNorm models.</summary>
    public static (Value Sum, Value Normed) ResidualThenNorm(DecoderGraph g, Value residual, Value delta, string prefix)
    {
        if (g.Ort && g.Config.Norm == NormKind.RmsNorm)
        {
            // outputs: normalised, mean (unused), inverse std (unused), input + skip
            var outputs = g.B.Node(GraphBuilder.MicrosoftDomain, "SkipSimplifiedLayerNormalization",
                [residual, delta, g.Weight(prefix + ".weight")], 4, Attr.Float("epsilon", (float)g.Config.NormEps));
            return (outputs[3], outputs[0]);
        }
        var sum = g.B.Op("Add", [residual, delta]);
        return (sum, Apply(g, sum, prefix));
    }
}
