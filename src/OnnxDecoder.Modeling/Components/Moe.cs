using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>The weights of a mixture-of-experts block, as checkpoint tensor names.</summary>
/// <param name="Router">Router Linear [experts, hidden].</param>
/// <param name="Gate">Per expert: gate Linear [intermediate, hidden] (null for a plain MLP).</param>
/// <param name="Up">Per expert: up (or fc) Linear [intermediate, hidden].</param>
/// <param name="Down">Per expert: down Linear [hidden, intermediate].</param>
public sealed record MoeWeightNames(string Router, IReadOnlyList<string>? Gate, IReadOnlyList<string> Up, IReadOnlyList<string> Down, string Prefix);

/// <summary>
/// Experts stacked in the fused MoE op's layout, each weight built only when the lowering fuses them:
/// fc1 [experts, 2*inter, hidden] with gate and up rows interleaved, fc1 bias [experts, 2*inter], fc2
/// [experts, hidden, inter], fc2 bias [experts, hidden]; activation g sigmoid(alpha g) (u + beta) with
/// g clamped above at limit and u to [-limit, limit]; <paramref name="Normalize"/>: the top-k softmax
/// weights are renormalised (softmax over the chosen logits). fc1 and fc2 are float sources [experts, out, in]
/// under the initializer names <paramref name="Fc1Name"/> / <paramref name="Fc2Name"/>, so that a lowering can
/// store them as they are or quantize them.
/// </summary>
public sealed record StackedSwigluExperts(string Fc1Name, Func<ITensorSource> Fc1, Func<Value> Fc1Bias, string Fc2Name, Func<ITensorSource> Fc2, Func<Value> Fc2Bias,
    float Alpha, float Beta, float Limit, bool Normalize);

/// <summary>
/// Mixture of experts: router logits -> softmax -> top-k -> optional renormalisation -> experts
/// -> weighted sum (Mixtral; Qwen-MoE without renormalisation).
/// </summary>
public static class Moe
{
    /// <summary>x [B, S, hidden] -> ([B, S, hidden], router logits [B*S, experts]).</summary>
    public static (Value Output, Value RouterLogits) Apply(DecoderGraph g, Value x, MoeWeightNames names)
    {
        var c = g.Config;
        var b = g.B;
        var tokens = b.Op("Reshape", [x, b.Int64s(-1, c.HiddenSize)]);                                  // [N, hidden]
        Value routerLogits;
        using (b.Scope("router")) routerLogits = b.Op("MatMul", [tokens, g.LinearWeight(names.Router)]); // [N, experts]: routing stays float32

        Value combined = g.Lowering.FusedMoe(g, tokens, routerLogits, names) ?? Spelled(g, tokens, routerLogits, names);
        return (b.Op("Reshape", [combined, b.Op("Shape", [x])]), routerLogits);
    }

    //   tokens ─┬─ expert 0 ──┐
    //           ├─ expert 1 ──┼─ Where(selected_e, w_e * y_e, 0) summed over experts
    //   router ─┴─ softmax ─ TopK ─ (renormalise) ─ per-expert weights w_e [N, 1]
    // Each expert's contribution passes through Where on its selection mask, so an expert that a
    // token did not choose contributes exactly 0 to it, whatever that expert computes.
    /// <summary>The top-k routing spread over every expert: each token's weight per expert (0 where not chosen),
    /// [N, experts], and whether the expert was chosen, [N, experts] bool. <paramref name="topIds"/> is [N, k].</summary>
    internal static (Value Weights, Value Selected) ScatterRouting(DecoderGraph g, Value topWeights, Value topIds, int numExperts)
    {
        var b = g.B;
        var expertIds = b.Op("Range", [b.Int64Scalar(0), b.Int64Scalar(numExperts), b.Int64Scalar(1)]);                // [experts]
        var oneHot = b.Op("Equal", [b.Op("Unsqueeze", [topIds, b.Int64s(-1)]), expertIds]);                            // [N, k, experts]
        var weights = b.Op("ReduceSum", [b.Op("Where", [oneHot, b.Op("Unsqueeze", [topWeights, b.Int64s(-1)]), g.Scalar(0)]), b.Int64s(1)], Attr.Int("keepdims", 0)); // [N, experts]
        var selected = b.Op("Cast", [g.Reduce("ReduceMax", b.Op("Cast", [oneHot], Attr.Int("to", (int)ElementType.Float)), [1], keepDims: false)], Attr.Int("to", (int)ElementType.Bool)); // [N, experts]
        return (weights, selected);
    }

    private static Value Spelled(DecoderGraph g, Value tokens, Value routerLogits, MoeWeightNames names)
    {
        var c = g.Config;
        var b = g.B;
        Value selected, weights;
        using (b.Scope("routing"))
        {
            var probabilities = b.Op("Softmax", [routerLogits], Attr.Int("axis", -1));                // [N, experts]
            var top = b.Node(GraphBuilder.DefaultDomain, "TopK", [probabilities, b.Int64s(c.ExpertsPerToken)], 2, Attr.Int("axis", -1)); // [N, k] x2
            var topWeights = top[0];
            if (c.NormTopKProb)
                topWeights = b.Op("Div", [topWeights, b.Op("ReduceSum", [topWeights, b.Int64s(-1)], Attr.Int("keepdims", 1))]);
            (weights, selected) = ScatterRouting(g, topWeights, top[1], c.NumExperts);
        }

        Value? sum = null;
        for (int e = 0; e < c.NumExperts; e++)
        {
            using var scope = b.Scope($"experts.{e}");
            var mlp = new MlpWeights(names.Gate?[e], names.Up[e], names.Down[e]);
            var y = Mlp.Apply(g, tokens, mlp);                                                        // [N, hidden]
            var column = b.Int64s(e);
            var weight = b.Op("Gather", [weights, column], Attr.Int("axis", 1));                     // [N, 1]
            var chosen = b.Op("Gather", [selected, column], Attr.Int("axis", 1));                    // [N, 1]
            var contribution = b.Op("Where", [chosen, b.Op("Mul", [y, weight]), g.Scalar(0)]);  // [N, hidden]
            sum = sum is null ? contribution : b.Op("Add", [sum, contribution]);
        }
        return sum!;
    }
}
