using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// StarCoder2 (Starcoder2ForCausalLM) as transformers' modeling_starcoder2 defines it, on top of the Llama-shaped
/// forward pass of <see cref="HfReference"/>:
/// <code>
///   x = x + o_proj(attn(input_layernorm(x)))                       nn.LayerNorm(hidden, eps=norm_epsilon): weight and bias
///   x = x + c_proj(act(c_fc(post_attention_layernorm(x))))         act = ACT2FN[hidden_act]
///   logits = lm_head(norm(x))                                      model.norm a LayerNorm too
/// </code>
/// q_proj, k_proj, v_proj, o_proj, c_fc and c_proj carry a bias when use_bias (default true); the LayerNorms always
/// do. Rotary over the whole head, scores scaled by head_dim^-0.5, sliding_window (when set) on every layer.
/// </summary>
public sealed partial class HfReference
{
    /// <summary>A block's norm by its prefix: StarCoder2's LayerNorm ({prefix}.weight and .bias), else RMSNorm ({prefix}.weight).</summary>
    private double[] BlockNorm(double[] v, string prefix) => Spec.Starcoder2Style ? LayerNorm(v, prefix) : RmsNorm(v, prefix + ".weight");

    /// <summary>Starcoder2MLP: c_proj(act(c_fc(x))), both biased with use_bias.</summary>
    private double[] Starcoder2Mlp(int layer, double[] x)
    {
        var c = Spec;
        string mlp = $"model.layers.{layer}.mlp";
        var inner = Linear($"{mlp}.c_fc.weight", x, c.IntermediateSize, c.MlpBias ? $"{mlp}.c_fc.bias" : null);
        for (int i = 0; i < inner.Length; i++) inner[i] = Act(inner[i]);
        return Linear($"{mlp}.c_proj.weight", inner, c.HiddenSize, c.MlpBias ? $"{mlp}.c_proj.bias" : null);
    }
}

public static partial class HfWeights
{
    /// <summary>StarCoder2's tensors in Starcoder2ForCausalLM's module order.</summary>
    private static IReadOnlyList<TensorSpec> ExpectedStarcoder2(HfSpec c)
    {
        long hidden = c.HiddenSize, inter = c.IntermediateSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        var specs = new List<TensorSpec> { new("model.embed_tokens.weight", [c.VocabSize, hidden]) };
        void Linear(string name, long outputs, long inputs, bool bias)
        {
            specs.Add(new(name + ".weight", [outputs, inputs]));
            if (bias) specs.Add(new(name + ".bias", [outputs]));
        }
        void LayerNorm(string name)
        {
            specs.Add(new(name + ".weight", [hidden]));
            specs.Add(new(name + ".bias", [hidden]));
        }
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}", attn = $"{p}.self_attn";
            Linear($"{attn}.q_proj", q, hidden, c.QkvBias);
            Linear($"{attn}.k_proj", kv, hidden, c.QkvBias);
            Linear($"{attn}.v_proj", kv, hidden, c.QkvBias);
            Linear($"{attn}.o_proj", hidden, q, c.OutputBias);
            Linear($"{p}.mlp.c_fc", inter, hidden, c.MlpBias);
            Linear($"{p}.mlp.c_proj", hidden, inter, c.MlpBias);
            LayerNorm($"{p}.input_layernorm");
            LayerNorm($"{p}.post_attention_layernorm");
        }
        LayerNorm("model.norm");
        if (!c.TieWordEmbeddings) specs.Add(new("lm_head.weight", [c.VocabSize, hidden]));
        return specs;
    }
}
