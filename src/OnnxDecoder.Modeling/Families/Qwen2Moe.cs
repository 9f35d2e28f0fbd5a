using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B), as transformers' configuration_qwen2_moe.py / modular_qwen2_moe.py
/// define it: Qwen2 attention with qkv_bias (default true) on q/k/v and none on o_proj; sparse layers route through
/// softmax -> top-k (num_experts_per_tok, default 4 of num_experts 60), renormalised only with norm_topk_prob (default
/// false), plus a shared expert every token passes through, scaled by a sigmoid gate:
/// y = Σ_topk p_e · expert_e(x) + σ(w_g · x) · shared(x). Layer i is sparse when i is not in mlp_only_layers and
/// (i + 1) % decoder_sparse_step == 0, else a dense MLP of intermediate_size (default 5632); experts are
/// moe_intermediate_size (1408) wide, the shared expert shared_expert_intermediate_size (5632). Experts are always gated
/// (gate_proj, up_proj, down_proj) with the config's activation. use_sliding_window slides the layers layer_types
/// names, else the even layers below max_window_layers.
/// <code>
///   model.layers.{i}.mlp.gate.weight                         [experts, hidden]   (the router)
///   model.layers.{i}.mlp.experts.{e}.gate_proj/up_proj.weight [intermediate, hidden]; down_proj [hidden, intermediate]
///   model.layers.{i}.mlp.shared_expert.gate_proj/up_proj.weight [shared, hidden]; down_proj [hidden, shared]
///   model.layers.{i}.mlp.shared_expert_gate.weight           [1, hidden]
///   model.layers.{i}.mlp.gate_proj/up_proj/down_proj.weight  dense layers, as in Llama
/// </code>
/// </summary>
public sealed class Qwen2Moe : Llama
{
    public override string Name => "qwen2_moe";
    public override IReadOnlyList<string> ModelTypes => ["qwen2_moe"];
    public override IReadOnlyList<string> Architectures => ["Qwen2MoeForCausalLM"];
    public override bool HasExperts => true;
    public override string? GgufArchitecture => null;

    protected override int ReadIntermediateSize(ConfigFields r) => r.Int("moe_intermediate_size") ?? 1408;

    /// <summary>Qwen2MoeConfig's defaults for the shared fields it sets apart from LlamaConfig.</summary>
    protected override SharedConfigDefaults Defaults => base.Defaults with { NumKvHeads = 16, MaxPositions = 32768 };

    /// <summary>Qwen2MoeConfig's own rule: with use_sliding_window, layer_types or else the even layers below max_window_layers.</summary>
    protected override (int? Window, bool[]? Layers) ReadSlidingWindow(ConfigFields r, string modelType) =>
        QwenSlidingWindow(r, (layer, maxWindowLayers) => layer % 2 == 0 && layer < maxWindowLayers, defaultNeedsWindow: false);

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        int experts = r.Int("num_experts") ?? 60;
        return base.ReadConfig(r, modelType) with
        {
            AttentionBias = r.Bool("qkv_bias") ?? true,
            NumExperts = experts,
            ExpertsPerToken = r.Int("num_experts_per_tok") ?? 4,
            NormTopKProb = r.Bool("norm_topk_prob") ?? false,
            SharedExpertIntermediateSize = r.Int("shared_expert_intermediate_size") ?? 5632,
            ExpertLayers = QwenExpertLayers(r, experts),
            DenseIntermediateSize = r.Int("intermediate_size") ?? 5632,
        };
    }

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
        if (!HasExpertsAt(c, layer))
        {
            foreach (var spec in MlpSpecs(MlpNames(c, layer), c.HiddenSize, c.DenseIntermediateSize)) yield return spec;
            yield break;
        }
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
        if (!HasExpertsAt(g.Config, layer)) return Components.Mlp.Apply(g, x, MlpNames(g.Config, layer));
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
