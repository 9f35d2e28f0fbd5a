using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Lowerings;

/// <summary>Standard ai.onnx ops (opset 17; 21 for blocked int4), for every execution provider.</summary>
public sealed class PortableLowering : GraphLowering
{
    public static readonly PortableLowering Instance = new();

    public override Lowering Kind => Modeling.Lowering.Portable;

    public override void PrepareShared(DecoderGraph g)
    {
        if (g.Config.Positions == PositionKind.Rotary) _ = g.RotaryPerPosition;
        _ = g.DefaultMasks.Bias;
    }

    //   x ──Mul(x,x)──ReduceMean(-1)──Add(eps)──Sqrt──Reciprocal──┐
    //   └────────────────────────────────────────────────────Mul──Mul(weight)
    // With float16 activations the statistics and the scaling run in float32 (cast in, cast out).
    public override Value RmsNorm(DecoderGraph g, Value x, Func<Value> weight, float eps)
    {
        var b = g.B;
        var x32 = g.ToFloat32(x);
        var meanSquare = g.Reduce("ReduceMean", b.Op("Mul", [x32, x32]), [-1], keepDims: true);                        // [B, S, 1]
        var inverseRms = b.Op("Reciprocal", [b.Op("Sqrt", [b.Op("Add", [meanSquare, b.FloatScalar(eps)])])]);          // [B, S, 1]
        return b.Op("Mul", [g.FromFloat32(b.Op("Mul", [x32, inverseRms])), weight()]);                                  // [B, S, hidden]
    }

    public override (Value Context, Value PresentKey, Value PresentValue) Attend(DecoderGraph g, Value q, Value k, Value v, Value pastKey, Value pastValue, AttentionLayer layer)
    {
        var c = g.Config;
        var b = g.B;
        int groups = c.QueriesPerKvHead;
        var q4 = b.Op("Reshape", [q, b.Int64s(0, 0, c.NumHeads, c.HeadDim)]);     // [B, S, heads, head_dim]
        var k4 = b.Op("Reshape", [k, b.Int64s(0, 0, c.NumKvHeads, c.HeadDim)]);   // [B, S, kv_heads, head_dim]
        var v4 = b.Op("Reshape", [v, b.Int64s(0, 0, c.NumKvHeads, c.HeadDim)]);
        if (c.Positions == PositionKind.Rotary && layer.Rotary != LayerRotary.None)
        {
            bool local = layer.Rotary == LayerRotary.Local;
            using (b.Scope("q_rotary")) q4 = Rotary.ApplyPortable(g, q4, local);
            using (b.Scope("k_rotary")) k4 = Rotary.ApplyPortable(g, k4, local);
        }
        var perm = Attr.Ints("perm", 0, 2, 1, 3);
        var qHeads = b.Op("Transpose", [q4], perm);                                // [B, heads, S, head_dim]
        var presentKey = b.Op("Concat", [pastKey, b.Op("Transpose", [k4], perm)], Attr.Int("axis", 2));     // [B, kv_heads, T, head_dim]
        var presentValue = b.Op("Concat", [pastValue, b.Op("Transpose", [v4], perm)], Attr.Int("axis", 2)); // [B, kv_heads, T, head_dim]

        // Group the query heads that share a kv head instead of repeating k and v:
        //   q [B, kv_heads, groups, S, head_dim] x k^T [B, kv_heads, 1, head_dim, T] -> [B, kv_heads, groups, S, T]
        var qGrouped = b.Op("Reshape", [qHeads, b.Int64s(0, c.NumKvHeads, groups, -1, c.HeadDim)]);
        var keys = b.Op("Unsqueeze", [presentKey, b.Int64s(2)]);                                          // [B, kv_heads, 1, T, head_dim]
        var values = b.Op("Unsqueeze", [presentValue, b.Int64s(2)]);
        var scores = b.Op("MatMul", [qGrouped, b.Op("Transpose", [keys], Attr.Ints("perm", 0, 1, 2, 4, 3))]);
        // Scale, soft-cap (tanh(s / cap) cap), mask and softmax in float32 (float16 scores are cast in, probabilities cast back).
        scores = b.Op("Mul", [g.ToFloat32(scores), b.FloatScalar(layer.Scale)]);
        if (layer.SoftCap is { } cap) scores = b.Op("Mul", [b.Op("Tanh", [b.Op("Mul", [scores, b.FloatScalar(1 / cap)])]), b.FloatScalar(cap)]);
        scores = b.Op("Add", [scores, g.Masks(layer.SlidingWindow).Bias]);
        Value probabilities;
        if (layer.Sinks is { } sinks)
        {
            // Each head's sink logit is one more key column of its softmax, dropped afterwards: it only adds to the denominator.
            var sinkLogits = b.Op("Reshape", [g.ToFloat32(sinks), b.Int64s(1, c.NumKvHeads, groups, 1, 1)]);                 // [1, kv_heads, groups, 1, 1]
            var columnShape = b.Op("Concat", [b.Op("Shape", [scores], Attr.Int("end", 4)), b.Int64s(1)], Attr.Int("axis", 0)); // [B, kv_heads, groups, S, 1]
            var withSinks = b.Op("Concat", [scores, b.Op("Expand", [sinkLogits, columnShape])], Attr.Int("axis", -1));        // [B, kv_heads, groups, S, T+1]
            var all = b.Op("Softmax", [withSinks], Attr.Int("axis", -1));
            probabilities = g.FromFloat32(b.Op("Slice", [all, b.Int64s(0), b.Int64s(-1), b.Int64s(-1)]));                   // [B, kv_heads, groups, S, T]
        }
        else probabilities = g.FromFloat32(b.Op("Softmax", [scores], Attr.Int("axis", -1)));                                 // [B, kv_heads, groups, S, T]
        var context = b.Op("MatMul", [probabilities, values]);                                            // [B, kv_heads, groups, S, head_dim]
        context = b.Op("Reshape", [context, b.Int64s(0, c.NumHeads, -1, c.HeadDim)]);                    // [B, heads, S, head_dim]
        context = b.Op("Transpose", [context], perm);                                                     // [B, S, heads, head_dim]
        return (b.Op("Reshape", [context, b.Int64s(0, 0, c.NumHeads * c.HeadDim)]), presentKey, presentValue);
    }

    public override QuantizedProjections QuantizedProjections(DecoderGraph g, QuantizationOptions options) => new DequantizeLinearProjections(g, options);
}
