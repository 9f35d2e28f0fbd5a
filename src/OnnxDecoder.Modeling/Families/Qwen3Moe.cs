using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3's attention (RMSNorm q_norm / k_norm over each head before
/// rotary) with routed SwiGLU experts and no shared expert: router logits -> softmax -> top-k
/// (num_experts_per_tok) -> renormalised when norm_topk_prob. Layer i holds experts when i is not in
/// mlp_only_layers and (i + 1) % decoder_sparse_step == 0; the other layers are dense SwiGLU MLPs of
/// intermediate_size, the experts are moe_intermediate_size wide. head_dim defaults to hidden / heads
/// (unlike Qwen3's 128); use_sliding_window puts sliding_window (default 4096) on every layer.
/// <code>
///   model.layers.{i}.mlp.gate.weight                                [experts, hidden]   (the router)
///   model.layers.{i}.mlp.experts.{e}.gate_proj/up_proj.weight       [moe_intermediate, hidden]
///   model.layers.{i}.mlp.experts.{e}.down_proj.weight               [hidden, moe_intermediate]
///   model.layers.{i}.mlp.gate_proj/up_proj/down_proj.weight         dense layers, as in Llama
/// </code>
/// </summary>
public sealed class Qwen3Moe : Llama
{
    public override string Name => "qwen3_moe";
    public override IReadOnlyList<string> ModelTypes => ["qwen3_moe"];
    public override IReadOnlyList<string> Architectures => ["Qwen3MoeForCausalLM"];
    public override bool HasExperts => true;
    public override string? GgufArchitecture => null;

    protected override int ReadIntermediateSize(ConfigFields r) => r.Int("moe_intermediate_size") ?? 768;

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        int experts = r.Int("num_experts") ?? 128;
        bool sliding = r.Bool("use_sliding_window") ?? false;
        return base.ReadConfig(r, modelType) with
        {
            NumExperts = experts,
            ExpertsPerToken = r.Int("num_experts_per_tok") ?? 8,
            NormTopKProb = r.Bool("norm_topk_prob") ?? false,
            ExpertLayers = QwenExpertLayers(r, experts),
            DenseIntermediateSize = r.Int("intermediate_size") ?? 6144,
            SlidingWindow = sliding ? (r.Present("sliding_window") ? r.Int("sliding_window") : 4096) : null,
        };
    }

    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    protected override IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer) => HeadNorms.Specs(c, layer);

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var (q, k, v) = base.ProjectQkv(g, layer, x);
        (q, k) = HeadNorms.Apply(g, layer, q, k, prefix => g.Weight(prefix + ".weight"));
        return (q, k, v);
    }

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        if (!HasExpertsAt(c, layer)) return MlpSpecs(MlpNames(c, layer), c.HiddenSize, c.DenseIntermediateSize);
        var names = RoutedExpertNames(c, layer);
        return new[] { new TensorSpec(names.Router, [c.NumExperts, c.HiddenSize]) }.Concat(Enumerable.Range(0, c.NumExperts)
            .SelectMany(e => MlpSpecs(new MlpWeights(names.Gate![e], names.Up[e], names.Down[e]), c.HiddenSize, c.IntermediateSize)));
    }

    protected override Value FeedForward(DecoderGraph g, int layer, Value x)
    {
        if (!HasExpertsAt(g.Config, layer)) return Mlp.Apply(g, x, MlpNames(g.Config, layer));
        var (output, logits) = Components.Moe.Apply(g, x, RoutedExpertNames(g.Config, layer));   // [B, S, hidden]
        g.RouterLogits.Add(logits);
        return output;
    }
}
