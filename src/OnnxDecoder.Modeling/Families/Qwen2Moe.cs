using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Qwen2-MoE: Qwen2 attention (q/k/v bias) with routed experts whose top-k weights are not
/// renormalised (norm_topk_prob false), plus a shared expert every token passes through, scaled by
/// a sigmoid gate:  y = Σ_topk p_e · expert_e(x) + σ(w_g · x) · shared(x). Experts are always
/// gated (gate_proj, up_proj, down_proj) with the config's activation. use_sliding_window slides the layers layer_types
/// names, else the even layers below max_window_layers.
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
    public override IReadOnlyList<string> ModelTypes => ["qwen2_moe"];
    public override IReadOnlyList<string> Architectures => ["Qwen2MoeForCausalLM"];
    public override bool HasExperts => true;
    public override string? GgufArchitecture => null;

    protected override bool AttentionBiasAlways(string modelType) => true;

    protected override int ReadIntermediateSize(ConfigFields r) => r.Int("moe_intermediate_size") ?? base.ReadIntermediateSize(r);

    /// <summary>Qwen2MoeConfig's own rule: with use_sliding_window, layer_types or else the even layers below max_window_layers.</summary>
    protected override (int? Window, bool[]? Layers) ReadSlidingWindow(ConfigFields r, string modelType) =>
        QwenSlidingWindow(r, (layer, maxWindowLayers) => layer % 2 == 0 && layer < maxWindowLayers, defaultNeedsWindow: false);

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType) => base.ReadConfig(r, modelType) with
    {
        NormTopKProb = r.Bool("norm_topk_prob") ?? false,
        SharedExpertIntermediateSize = r.Int("shared_expert_intermediate_size") ?? 0,
    };

    /// <summary>The routed experts, and the shared expert with its gate (null without one).</summary>
    private sealed record FeedForwardNames(MoeWeightNames Routed, MlpWeights? Shared, string? SharedGate);

    private static FeedForwardNames MoeNames(DecoderConfig c, int layer)
    {
        var routed = RoutedExpertNames(c, layer);
        if (c.SharedExpertIntermediateSize == 0) return new(routed, null, null);
        string mlp = routed.Prefix;
        string shared = $"{mlp}.shared_expert";
        return new(routed, new MlpWeights($"{shared}.gate_proj.weight", $"{shared}.up_proj.weight", $"{shared}.down_proj.weight"), $"{mlp}.shared_expert_gate.weight");
    }

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        var names = MoeNames(c, layer);
        yield return new(names.Routed.Router, [c.NumExperts, c.HiddenSize]);
        for (int e = 0; e < c.NumExperts; e++)
            foreach (var spec in MlpSpecs(new MlpWeights(names.Routed.Gate![e], names.Routed.Up[e], names.Routed.Down[e]), c.HiddenSize, c.IntermediateSize)) yield return spec;
        if (names.Shared is null) yield break;
        foreach (var spec in MlpSpecs(names.Shared, c.HiddenSize, c.SharedExpertIntermediateSize)) yield return spec;
        yield return new(names.SharedGate!, [1, c.HiddenSize]);
    }

    protected override Value FeedForward(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        var names = MoeNames(g.Config, layer);
        var (routed, logits) = Components.Moe.Apply(g, x, names.Routed);             // [B, S, hidden]
        g.RouterLogits.Add(logits);
        if (names.Shared is null) return routed;

        using var scope = b.Scope("shared_expert");
        var sharedOut = Components.Mlp.Apply(g, x, names.Shared);                     // [B, S, hidden]
        Value gate;
        using (b.Scope("gate")) gate = b.Op("Sigmoid", [b.Op("MatMul", [x, g.LinearWeight(names.SharedGate!)])]); // [B, S, 1]
        return b.Op("Add", [routed, b.Op("Mul", [sharedOut, gate])]);
    }
}
