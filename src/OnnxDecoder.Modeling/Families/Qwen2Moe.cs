using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Qwen2-MoE: Qwen2 attention (q/k/v bias) with routed experts whose top-k weights are not
/// renormalised (norm_topk_prob false), plus a shared expert every token passes through, scaled by
/// a sigmoid gate:  y = Σ_topk p_e · expert_e(x) + σ(w_g · x) · shared(x). Experts are always
/// gated (gate_proj, up_proj, down_proj) with the config's activation.
/// <code>
///   model.layers.{i}.mlp.gate.weight                         [experts, hidden]   (the router)
///   model.layers.{i}.mlp.experts.{e}.gate_proj/up_proj.weight [intermediate, hidden]; down_proj [hidden, intermediate]
///   model.layers.{i}.mlp.shared_expert.gate_proj/up_proj.weight [shared, hidden]; down_proj [hidden, shared]
///   model.layers.{i}.mlp.shared_expert_gate.weight           [1, hidden]
/// </code>
/// </summary>
public sealed class Qwen2Moe : Llama
{
    public override string Name => "qwen2_moe";

    private static string Mlp(int layer) => $"model.layers.{layer}.mlp";

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        yield return new($"{Mlp(layer)}.gate.weight", [c.NumExperts, c.HiddenSize]);
        for (int e = 0; e < c.NumExperts; e++)
            foreach (var spec in ExpertSpecs($"{Mlp(layer)}.experts.{e}", c.IntermediateSize, c.HiddenSize)) yield return spec;
        if (c.SharedExpertIntermediateSize > 0)
        {
            foreach (var spec in ExpertSpecs($"{Mlp(layer)}.shared_expert", c.SharedExpertIntermediateSize, c.HiddenSize)) yield return spec;
            yield return new($"{Mlp(layer)}.shared_expert_gate.weight", [1, c.HiddenSize]);
        }
    }

    private static IEnumerable<TensorSpec> ExpertSpecs(string prefix, int intermediate, int hidden) =>
    [
        new($"{prefix}.gate_proj.weight", [intermediate, hidden]),
        new($"{prefix}.up_proj.weight", [intermediate, hidden]),
        new($"{prefix}.down_proj.weight", [hidden, intermediate]),
    ];

    protected override Value FeedForward(DecoderGraph g, int layer, Value x, List<Value> routerLogits)
    {
        var c = g.Config;
        var b = g.B;
        var experts = Enumerable.Range(0, c.NumExperts).Select(e => $"{Mlp(layer)}.experts.{e}").ToList();
        var names = new MoeWeightNames(
            Router: $"{Mlp(layer)}.gate.weight",
            Gate: experts.Select(e => e + ".gate_proj.weight").ToList(),
            Up: experts.Select(e => e + ".up_proj.weight").ToList(),
            Down: experts.Select(e => e + ".down_proj.weight").ToList(),
            Prefix: Mlp(layer));
        var (routed, logits) = Components.Moe.Apply(g, x, names);                 // [B, S, hidden]
        routerLogits.Add(logits);
        if (c.SharedExpertIntermediateSize == 0) return routed;

        using var scope = b.Scope("shared_expert");
        string shared = $"{Mlp(layer)}.shared_expert";
        var sharedOut = Components.Mlp.Apply(g, x, new MlpWeights($"{shared}.gate_proj.weight", $"{shared}.up_proj.weight", $"{shared}.down_proj.weight")); // [B, S, hidden]
        Value gate;
        using (b.Scope("gate")) gate = b.Op("Sigmoid", [b.Op("MatMul", [x, g.LinearWeight($"{Mlp(layer)}.shared_expert_gate.weight")])]); // [B, S, 1]
        return b.Op("Add", [routed, b.Op("Mul", [sharedOut, gate])]);
    }
}
