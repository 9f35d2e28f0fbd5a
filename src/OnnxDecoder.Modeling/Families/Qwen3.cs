using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Qwen3: Llama layout plus an RMSNorm over each head of q and of k (its scale [head_dim] shared by
/// the heads) between the projection and the rotary embedding. head_dim is its own config field
/// (128 by default, not hidden / heads); attention_bias puts biases on q, k, v and o_proj. use_sliding_window slides
/// the layers layer_types names, else those from max_window_layers on.
/// <code>
///   model.layers.{i}.self_attn.q_norm.weight [head_dim];  model.layers.{i}.self_attn.k_norm.weight [head_dim]
/// </code>
/// </summary>
public sealed class Qwen3 : Llama
{
    public override string Name => "qwen3";
    public override IReadOnlyList<string> ModelTypes => ["qwen3"];
    public override IReadOnlyList<string> Architectures => ["Qwen3ForCausalLM"];
    public override string? GgufArchitecture => null;

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType) =>
        base.ReadConfig(r, modelType) with { HeadDim = r.Int("head_dim") ?? 128 };

    /// <summary>Qwen3Config's rule, Qwen2's: with use_sliding_window, layer_types or else the layers from max_window_layers on.</summary>
    protected override (int? Window, bool[]? Layers) ReadSlidingWindow(ConfigFields r, string modelType) =>
        QwenSlidingWindow(r, (layer, maxWindowLayers) => layer >= maxWindowLayers);

    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    protected override IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer) => HeadNorms.Specs(c, layer);

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var (q, k, v) = base.ProjectQkv(g, layer, x);
        (q, k) = HeadNorms.Apply(g, layer, q, k, prefix => g.Weight(prefix + ".weight"));
        return (q, k, v);
    }
}
