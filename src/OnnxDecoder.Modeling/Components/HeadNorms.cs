using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>
/// q_norm / k_norm per head (Qwen3, Qwen3-MoE, Gemma 3): an RMSNorm over head_dim of every head of q and of k,
/// its scale [head_dim] shared by the heads, between the projection and the rotary embedding.
/// <code>
///   model.layers.{i}.self_attn.q_norm.weight [head_dim];  model.layers.{i}.self_attn.k_norm.weight [head_dim]
/// </code>
/// </summary>
public static class HeadNorms
{
    public static (string Q, string K) Names(int layer) =>
        ($"model.layers.{layer}.self_attn.q_norm", $"model.layers.{layer}.self_attn.k_norm");

    public static IEnumerable<TensorSpec> Specs(DecoderConfig c, int layer)
    {
        var (q, k) = Names(layer);
        yield return new(q + ".weight", [c.HeadDim]);
        yield return new(k + ".weight", [c.HeadDim]);
    }

    /// <summary>q [B, S, heads*head_dim] and k [B, S, kv_heads*head_dim], each normed per head; <paramref name="scale"/>
    /// turns a norm's name prefix into its scale (the weight, or Gemma's 1 + w).</summary>
    public static (Value Q, Value K) Apply(DecoderGraph g, int layer, Value q, Value k, Func<string, Value> scale)
    {
        var (qNorm, kNorm) = Names(layer);
        using (g.B.Scope("q_norm")) q = PerHead(g, q, g.Config.NumHeads, () => scale(qNorm));
        using (g.B.Scope("k_norm")) k = PerHead(g, k, g.Config.NumKvHeads, () => scale(kNorm));
        return (q, k);
    }

    /// <summary>x [B, S, heads*head_dim] -> per head RMSNorm over head_dim -> [B, S, heads*head_dim].</summary>
    private static Value PerHead(DecoderGraph g, Value x, int heads, Func<Value> scale)
    {
        var b = g.B;
        var perHead = b.Op("Reshape", [x, b.Int64s(0, 0, heads, g.Config.HeadDim)]);                  // [B, S, heads, head_dim]
        var normed = g.Lowering.RmsNorm(g, perHead, scale, (float)g.Config.NormEps);
        return b.Op("Reshape", [normed, b.Int64s(0, 0, -1)]);                                          // [B, S, heads*head_dim]
    }
}
