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

    internal static (string Q, string K) HeadNorms(int layer) =>
        ($"model.layers.{layer}.self_attn.q_norm", $"model.layers.{layer}.self_attn.k_norm");

    protected override IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer)
    {
        var (q, k) = HeadNorms(layer);
        yield return new(q + ".weight", [c.HeadDim]);
        yield return new(k + ".weight", [c.HeadDim]);
    }

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var (q, k, v) = base.ProjectQkv(g, layer, x);
        var (qNorm, kNorm) = HeadNorms(layer);
        using (g.B.Scope("q_norm")) q = HeadNorm(g, q, g.Config.NumHeads, qNorm);
        using (g.B.Scope("k_norm")) k = HeadNorm(g, k, g.Config.NumKvHeads, kNorm);
        return (q, k, v);
    }

    /// <summary>x [B, S, heads*head_dim] -> per head RMSNorm over head_dim -> [B, S, heads*head_dim].</summary>
    internal static Value HeadNorm(DecoderGraph g, Value x, int heads, string prefix)
    {
        var b = g.B;
        var perHead = b.Op("Reshape", [x, b.Int64s(0, 0, heads, g.Config.HeadDim)]);                  // [B, S, heads, head_dim]
        var normed = g.Lowering.RmsNorm(g, perHead, () => g.Weight(prefix + ".weight"), (float)g.Config.NormEps);
        return b.Op("Reshape", [normed, b.Int64s(0, 0, -1)]);                                          // [B, S, heads*head_dim]
    }
}
