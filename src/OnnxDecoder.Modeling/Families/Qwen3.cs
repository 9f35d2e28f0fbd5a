using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Qwen3: Llama layout plus an RMSNorm over each head of q and of k (its scale [head_dim] shared by
/// the heads) between the projection and the rotary embedding. head_dim is its own config field
/// (128 by default, not hidden / heads); attention_bias puts biases on q, k, v and o_proj.
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

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        // Qwen3's sliding window covers only layers from max_window_layers on; released models leave it off.
        if (r.Bool("use_sliding_window") == true)
            throw new ConfigException(r.Source, "use_sliding_window", "(true) is not supported for qwen3: export a config with use_sliding_window false");
        return base.ReadConfig(r, modelType) with { HeadDim = r.Int("head_dim") ?? 128 };
    }

    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    protected override IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer) => HeadNorms.Specs(c, layer);

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var (q, k, v) = base.ProjectQkv(g, layer, x);
        (q, k) = HeadNorms.Apply(g, layer, q, k, prefix => g.Weight(prefix + ".weight"));
        return (q, k, v);
    }
}
