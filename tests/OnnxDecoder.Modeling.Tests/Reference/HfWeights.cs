using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// The tensors <see cref="HfReference"/> reads for a config, by Hugging Face name and shape, and seeded
/// random weights for them. The list is written from transformers' module definitions (independently
/// of any family's ExpectedWeights), so a family's name map can be checked against it.
/// </summary>
public static partial class HfWeights
{
    public static IReadOnlyList<TensorSpec> Expected(string configJson) => Expected(HfSpec.Parse(configJson));

    public static IReadOnlyList<TensorSpec> Expected(HfSpec c)
    {
        if (c.PhiStyle) return ExpectedPhi(c);
        if (c.Starcoder2Style) return ExpectedStarcoder2(c);
        long hidden = c.HiddenSize, inter = c.IntermediateSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        var specs = new List<TensorSpec> { new("model.embed_tokens.weight", [c.VocabSize, hidden]) };
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}", attn = $"{p}.self_attn", mlp = $"{p}.mlp";
            if (!c.PostNormOnly) specs.Add(new($"{p}.input_layernorm.weight", [hidden]));
            if (c.FusedProjections)
            {
                specs.Add(new($"{attn}.qkv_proj.weight", [q + 2 * kv, hidden]));
            }
            else
            {
                specs.Add(new($"{attn}.q_proj.weight", [q, hidden]));
                if (c.QkvBias) specs.Add(new($"{attn}.q_proj.bias", [q]));
                specs.Add(new($"{attn}.k_proj.weight", [kv, hidden]));
                if (c.QkvBias) specs.Add(new($"{attn}.k_proj.bias", [kv]));
                specs.Add(new($"{attn}.v_proj.weight", [kv, hidden]));
                if (c.QkvBias) specs.Add(new($"{attn}.v_proj.bias", [kv]));
            }
            if (c.QkNorm || c.QkNormWhole)
            {
                specs.Add(new($"{attn}.q_norm.weight", [c.QkNormWhole ? q : c.HeadDim]));
                specs.Add(new($"{attn}.k_norm.weight", [c.QkNormWhole ? kv : c.HeadDim]));
            }
            specs.Add(new($"{attn}.o_proj.weight", [hidden, q]));
            if (c.OutputBias) specs.Add(new($"{attn}.o_proj.bias", [hidden]));
            if (c.GptOss is not null) specs.Add(new($"{attn}.sinks", [c.NumHeads]));
            specs.Add(new($"{p}.post_attention_layernorm.weight", [hidden]));
            if (c.SandwichNorms)
            {
                specs.Add(new($"{p}.pre_feedforward_layernorm.weight", [hidden]));
                specs.Add(new($"{p}.post_feedforward_layernorm.weight", [hidden]));
            }
            if (c.GptOss is { } oss)
            {
                specs.AddRange(GptOssSpecs(c, oss, i));
                continue;
            }
            if (c.Moe is { } moe && moe.SparseLayers[i])
            {
                specs.AddRange(MoeSpecs(c, moe, i));
                continue;
            }
            if (c.FusedProjections)
            {
                specs.Add(new($"{mlp}.gate_up_proj.weight", [2 * inter, hidden]));
            }
            else
            {
                specs.Add(new($"{mlp}.gate_proj.weight", [inter, hidden]));
                if (c.MlpBias) specs.Add(new($"{mlp}.gate_proj.bias", [inter]));
                specs.Add(new($"{mlp}.up_proj.weight", [inter, hidden]));
                if (c.MlpBias) specs.Add(new($"{mlp}.up_proj.bias", [inter]));
            }
            specs.Add(new($"{mlp}.down_proj.weight", [hidden, inter]));
            if (c.MlpBias) specs.Add(new($"{mlp}.down_proj.bias", [hidden]));
            if (c.PostNormOnly) specs.Add(new($"{p}.post_feedforward_layernorm.weight", [hidden]));
        }
        specs.Add(new("model.norm.weight", [hidden]));
        if (!c.TieWordEmbeddings) specs.Add(new("lm_head.weight", [c.VocabSize, hidden]));
        return specs;
    }

    /// <summary>
    /// Seeded random weights for every expected tensor: matrices uniform in +-1.7/sqrt(fan-in), biases
    /// +-0.1, norm weights 1 +- 0.1 (Gemma's (1 + w) norms get w in +-0.1, as its weights start at zero).
    /// </summary>
    public static InMemoryWeights Random(string configJson, int seed) => Random(HfSpec.Parse(configJson), seed);

    public static InMemoryWeights Random(HfSpec c, int seed, double matrixScale = 1.7)
    {
        var weights = new InMemoryWeights();
        var random = new Random(seed);
        foreach (var spec in Expected(c))
        {
            long count = spec.Shape.Aggregate(1L, (a, b) => a * b);
            var values = new float[count];
            bool isNorm = spec.Name.EndsWith("norm.weight", StringComparison.Ordinal);
            // GPT-OSS's stacked expert biases end in _bias; its stacked [experts, in, out] matrices have fan-in shape[1];
            // its sinks get +-2, enough to take a visible share of each softmax.
            bool isBias = spec.Name.EndsWith(".bias", StringComparison.Ordinal) || spec.Name.EndsWith("_bias", StringComparison.Ordinal);
            double scale = spec.Shape.Length is 2 or 3 ? matrixScale / Math.Sqrt(spec.Shape[1]) : spec.Name.EndsWith(".sinks", StringComparison.Ordinal) ? 2 : 0.1;
            for (long i = 0; i < count; i++)
            {
                double u = random.NextDouble() * 2 - 1;
                values[i] = (float)(isNorm ? (c.GemmaStyle ? 0 : 1) + 0.1 * u : isBias ? 0.1 * u : scale * u);
            }
            weights.Add(spec.Name, values, spec.Shape);
        }
        return weights;
    }
}
