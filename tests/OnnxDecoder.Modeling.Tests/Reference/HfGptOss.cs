using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// GPT-OSS's router and experts as transformers' GptOssTopKRouter / GptOssExperts define them, and its
/// attention sinks (eager_attention_forward: a sink logit per head concatenated to the scores, softmaxed,
/// then dropped). Router: logits = router.weight x + router.bias; the top num_experts_per_tok (default 4)
/// logits, softmaxed among themselves. Experts (num_local_experts, default 128; "num_experts" is its
/// attribute alias), stored [in, out]: gate_up = x gate_up_proj[e] + gate_up_proj_bias[e] (2 * intermediate),
/// gate = gate_up[0::2], up = gate_up[1::2], gate = min(gate, 7), up = clamp(up, -7, 7),
/// out = ((up + 1) * gate * sigmoid(1.702 gate)) down_proj[e] + down_proj_bias[e]. alpha and limit are
/// GptOssExperts' constants (swiglu_limit in config.json is not read by it).
/// </summary>
public sealed record HfGptOss(int NumExperts, int TopK)
{
    public const double Alpha = 1.702, Limit = 7.0;

    internal static HfGptOss? Read(HfSpec.Fields f, string modelType)
    {
        if (modelType != "gpt_oss") return null;
        int experts = f.Int("num_local_experts") ?? f.Int("num_experts") ?? 128, topK = f.Int("num_experts_per_tok") ?? 4;
        if (topK < 1 || topK > experts) throw new FormatException($"{f.Source}: num_experts_per_tok ({topK}) must be between 1 and num_local_experts ({experts})");
        return new HfGptOss(experts, topK);
    }
}

public sealed partial class HfReference
{
    /// <summary>When false, the experts skip GPT-OSS's clamps (a mutation that tests use to show the clamp matters).</summary>
    public bool ClampSwiglu { get; init; } = true;

    private double[] GptOssExperts(int layer, double[] x, HfGptOss oss)
    {
        var c = Spec;
        string mlp = $"model.layers.{layer}.mlp";
        int hidden = x.Length, inter = c.IntermediateSize, experts = oss.NumExperts;
        var logits = Linear($"{mlp}.router.weight", x, experts, $"{mlp}.router.bias");
        var chosen = Enumerable.Range(0, experts).OrderByDescending(e => logits[e]).ThenBy(e => e).Take(oss.TopK).ToArray();
        double max = chosen.Max(e => logits[e]);
        double total = chosen.Sum(e => Math.Exp(logits[e] - max));
        if (ChosenExperts.Length != c.NumLayers) ChosenExperts = new List<int[]>?[c.NumLayers];
        (ChosenExperts[layer] ??= []).Add(chosen);

        var gateUp = Tensor($"{mlp}.experts.gate_up_proj", experts, hidden, 2 * inter);      // [experts, hidden, 2*inter]
        var gateUpBias = Tensor($"{mlp}.experts.gate_up_proj_bias", experts, 2 * inter);
        var down = Tensor($"{mlp}.experts.down_proj", experts, inter, hidden);                // [experts, inter, hidden]
        var downBias = Tensor($"{mlp}.experts.down_proj_bias", experts, hidden);
        var output = new double[hidden];
        foreach (int e in chosen)
        {
            double weight = Math.Exp(logits[e] - max) / total;
            var glu = new double[inter];
            for (int i = 0; i < inter; i++)
            {
                double gate = gateUpBias[(long)e * 2 * inter + 2 * i], up = gateUpBias[(long)e * 2 * inter + 2 * i + 1];
                for (int h = 0; h < hidden; h++)
                {
                    long row = ((long)e * hidden + h) * 2 * inter;
                    gate += x[h] * gateUp[row + 2 * i];
                    up += x[h] * gateUp[row + 2 * i + 1];
                }
                if (ClampSwiglu)
                {
                    gate = Math.Min(gate, HfGptOss.Limit);
                    up = Math.Clamp(up, -HfGptOss.Limit, HfGptOss.Limit);
                }
                glu[i] = (up + 1) * gate / (1 + Math.Exp(-HfGptOss.Alpha * gate));
            }
            for (int h = 0; h < hidden; h++)
            {
                double y = downBias[(long)e * hidden + h];
                for (int i = 0; i < inter; i++) y += glu[i] * down[((long)e * inter + i) * hidden + h];
                output[h] += weight * y;
            }
        }
        return output;
    }
}

public static partial class HfWeights
{
    /// <summary>A GPT-OSS layer's router and stacked experts, in GptOssMLP's order.</summary>
    private static IEnumerable<TensorSpec> GptOssSpecs(HfSpec c, HfGptOss oss, int layer)
    {
        string mlp = $"model.layers.{layer}.mlp";
        long e = oss.NumExperts, hidden = c.HiddenSize, inter = c.IntermediateSize;
        yield return new($"{mlp}.router.weight", [e, hidden]);
        yield return new($"{mlp}.router.bias", [e]);
        yield return new($"{mlp}.experts.gate_up_proj", [e, hidden, 2 * inter]);
        yield return new($"{mlp}.experts.gate_up_proj_bias", [e, 2 * inter]);
        yield return new($"{mlp}.experts.down_proj", [e, inter, hidden]);
        yield return new($"{mlp}.experts.down_proj_bias", [e, hidden]);
    }
}
