using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Llama and the models that share its layout: Mistral (sliding window), Qwen2 (q/k/v bias),
/// TinyLlama, llama2.c exports. Hugging Face tensor names:
/// <code>
///   model.embed_tokens.weight                       [vocab, hidden]
///   model.layers.{i}.input_layernorm.weight         [hidden]
///   model.layers.{i}.self_attn.q_proj.weight        [heads*head_dim, hidden]     (+ .bias with attention_bias)
///   model.layers.{i}.self_attn.k_proj.weight        [kv_heads*head_dim, hidden]  (v_proj alike)
///   model.layers.{i}.self_attn.o_proj.weight        [hidden, heads*head_dim]
///   model.layers.{i}.post_attention_layernorm.weight [hidden]
///   model.layers.{i}.mlp.gate_proj / up_proj        [intermediate, hidden]; down_proj [hidden, intermediate]
///   model.norm.weight [hidden];  lm_head.weight [vocab, hidden] unless tied
/// </code>
/// LayerNorm variants add .bias to each norm; learned positions add model.embed_positions.weight.
/// </summary>
public class Llama : DecoderFamily
{
    public override string Name => "llama";

    protected override string EmbeddingName => "model.embed_tokens.weight";
    protected override string PositionEmbeddingName => "model.embed_positions.weight";
    protected override string InputNorm(int layer) => $"model.layers.{layer}.input_layernorm";
    protected override string PostAttentionNorm(int layer) => $"model.layers.{layer}.post_attention_layernorm";
    protected override string FinalNorm => "model.norm";
    protected static string Attn(int layer, string part) => $"model.layers.{layer}.self_attn.{part}";

    public override IReadOnlyList<TensorSpec> ExpectedWeights(DecoderConfig c)
    {
        var specs = new List<TensorSpec> { new(EmbeddingName, [c.VocabSize, c.HiddenSize]) };
        if (c.Positions == PositionKind.Learned) specs.Add(new(PositionEmbeddingName, [c.MaxPositions, c.HiddenSize]));
        long qWidth = (long)c.NumHeads * c.HeadDim, kvWidth = (long)c.NumKvHeads * c.HeadDim;
        for (int i = 0; i < c.NumLayers; i++)
        {
            specs.AddRange(NormSpecs(c, InputNorm(i)));
            specs.Add(new(Attn(i, "q_proj.weight"), [qWidth, c.HiddenSize]));
            specs.Add(new(Attn(i, "k_proj.weight"), [kvWidth, c.HiddenSize]));
            specs.Add(new(Attn(i, "v_proj.weight"), [kvWidth, c.HiddenSize]));
            if (c.AttentionBias)
            {
                specs.Add(new(Attn(i, "q_proj.bias"), [qWidth]));
                specs.Add(new(Attn(i, "k_proj.bias"), [kvWidth]));
                specs.Add(new(Attn(i, "v_proj.bias"), [kvWidth]));
            }
            specs.Add(new(Attn(i, "o_proj.weight"), [c.HiddenSize, qWidth]));
            if (c.ProjectionBias) specs.Add(new(Attn(i, "o_proj.bias"), [c.HiddenSize]));
            specs.AddRange(NormSpecs(c, PostAttentionNorm(i)));
            specs.AddRange(FeedForwardSpecs(c, i));
        }
        specs.AddRange(NormSpecs(c, FinalNorm));
        if (!c.TieWordEmbeddings) specs.Add(new("lm_head.weight", [c.VocabSize, c.HiddenSize]));
        return specs;
    }

    protected virtual IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        string mlp = $"model.layers.{layer}.mlp";
        if (c.GatedMlp) yield return new($"{mlp}.gate_proj.weight", [c.IntermediateSize, c.HiddenSize]);
        yield return new($"{mlp}.up_proj.weight", [c.IntermediateSize, c.HiddenSize]);
        if (c.ProjectionBias && !c.GatedMlp) yield return new($"{mlp}.up_proj.bias", [c.IntermediateSize]);
        yield return new($"{mlp}.down_proj.weight", [c.HiddenSize, c.IntermediateSize]);
        if (c.ProjectionBias && !c.GatedMlp) yield return new($"{mlp}.down_proj.bias", [c.HiddenSize]);
    }

    protected override (Value Q, Value K, Value V) ProjectQkv(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        string? Bias(string part) => g.Config.AttentionBias ? Attn(layer, part + ".bias") : null;
        Value q, k, v;
        using (b.Scope("q_proj")) q = g.Linear(x, Attn(layer, "q_proj.weight"), Bias("q_proj"));
        using (b.Scope("k_proj")) k = g.Linear(x, Attn(layer, "k_proj.weight"), Bias("k_proj"));
        using (b.Scope("v_proj")) v = g.Linear(x, Attn(layer, "v_proj.weight"), Bias("v_proj"));
        return (q, k, v);
    }

    protected override Value ProjectOut(DecoderGraph g, int layer, Value context) =>
        g.Linear(context, Attn(layer, "o_proj.weight"), g.Config.ProjectionBias ? Attn(layer, "o_proj.bias") : null);

    protected override Value FeedForward(DecoderGraph g, int layer, Value x, List<Value> routerLogits)
    {
        string mlp = $"model.layers.{layer}.mlp";
        bool bias = g.Config.ProjectionBias && !g.Config.GatedMlp;
        return Mlp.Apply(g, x, new MlpWeights(
            g.Config.GatedMlp ? $"{mlp}.gate_proj.weight" : null,
            $"{mlp}.up_proj.weight",
            $"{mlp}.down_proj.weight",
            bias ? $"{mlp}.up_proj.bias" : null,
            bias ? $"{mlp}.down_proj.bias" : null));
    }
}
