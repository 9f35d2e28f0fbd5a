using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// Phi (PhiForCausalLM: Phi-1, Phi-1.5, Phi-2) as transformers' modeling_phi defines it:
/// <code>
///   h = input_layernorm(x)                    LayerNorm (weight, bias), eps layer_norm_eps
///   x = x + dense(attn(h)) + fc2(act(fc1(h)))  attention and MLP in parallel from the same h
///   logits = lm_head(final_layernorm(x))      lm_head carries a bias
/// </code>
/// q/k/v/dense/fc1/fc2 all biased; qk_layernorm: q_layernorm / k_layernorm, LayerNorm(head_dim) on each
/// head after the view into heads and before rotary; rotary on the first int(head_dim *
/// partial_rotary_factor) dims (rotate_half over those); scale head_dim^-0.5; no sliding window.
/// </summary>
public sealed partial class HfReference
{
    private double[] ForwardPhi(long[,] ids, long[,] attentionMask, long[,] positionIds, double[] invFreq, double ropeScale)
    {
        var c = Spec;
        int batch = ids.GetLength(0), length = ids.GetLength(1), hidden = c.HiddenSize;
        var embedding = Tensor("model.embed_tokens.weight", c.VocabSize, hidden);
        var logits = new double[(long)batch * length * c.VocabSize];
        for (int row = 0; row < batch; row++)
        {
            var x = new double[length][];
            for (int t = 0; t < length; t++)
            {
                long id = ids[row, t];
                if (id < 0 || id >= c.VocabSize) throw new ArgumentException($"input id {id} at [{row}, {t}] is outside the vocabulary ({c.VocabSize})");
                x[t] = new double[hidden];
                for (int h = 0; h < hidden; h++) x[t][h] = embedding[id * hidden + h];
            }
            var mask = Enumerable.Range(0, length).Select(t => attentionMask[row, t] != 0).ToArray();
            var positions = Enumerable.Range(0, length).Select(t => positionIds[row, t]).ToArray();

            for (int layer = 0; layer < c.NumLayers; layer++)
            {
                string p = $"model.layers.{layer}";
                var normed = x.Select(v => LayerNorm(v, $"{p}.input_layernorm")).ToArray();
                var attention = PhiAttention(layer, normed, mask, positions, invFreq, ropeScale);
                for (int t = 0; t < length; t++)
                {
                    var inner = Linear($"{p}.mlp.fc1.weight", normed[t], c.IntermediateSize, $"{p}.mlp.fc1.bias");
                    for (int i = 0; i < inner.Length; i++) inner[i] = Act(inner[i]);
                    var ff = Linear($"{p}.mlp.fc2.weight", inner, hidden, $"{p}.mlp.fc2.bias");
                    for (int h = 0; h < hidden; h++) x[t][h] += attention[t][h] + ff[h];
                }
            }

            string head = c.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
            var headBias = Tensor("lm_head.bias", c.VocabSize);
            for (int t = 0; t < length; t++)
            {
                var result = Linear(head, LayerNorm(x[t], "model.final_layernorm"), c.VocabSize, null);
                for (int v = 0; v < c.VocabSize; v++) logits[((long)row * length + t) * c.VocabSize + v] = result[v] + headBias[v];
            }
        }
        return logits;
    }

    /// <summary>LayerNorm: (x - mean) / sqrt(var + eps) * w + b (biased variance), weights {prefix}.weight and .bias.</summary>
    private double[] LayerNorm(double[] v, string prefix)
    {
        var gamma = Tensor(prefix + ".weight", v.Length);
        var beta = Tensor(prefix + ".bias", v.Length);
        double mean = v.Average(), variance = v.Select(a => (a - mean) * (a - mean)).Average();
        double inv = 1 / Math.Sqrt(variance + Spec.RmsNormEps);
        var result = new double[v.Length];
        for (int i = 0; i < v.Length; i++) result[i] = (v[i] - mean) * inv * gamma[i] + beta[i];
        return result;
    }

    private double[][] PhiAttention(int layer, double[][] x, bool[] mask, long[] positions, double[] invFreq, double ropeScale)
    {
        var c = Spec;
        int length = x.Length, heads = c.NumHeads, kvHeads = c.NumKvHeads, d = c.HeadDim;
        string attn = $"model.layers.{layer}.self_attn";
        double[][] q = new double[length][], k = new double[length][], v = new double[length][];
        for (int t = 0; t < length; t++)
        {
            q[t] = Linear($"{attn}.q_proj.weight", x[t], heads * d, $"{attn}.q_proj.bias");
            k[t] = Linear($"{attn}.k_proj.weight", x[t], kvHeads * d, $"{attn}.k_proj.bias");
            v[t] = Linear($"{attn}.v_proj.weight", x[t], kvHeads * d, $"{attn}.v_proj.bias");
            if (c.QkLayerNorm)
            {
                for (int h = 0; h < heads; h++) Array.Copy(LayerNorm(q[t][(h * d)..((h + 1) * d)], $"{attn}.q_layernorm"), 0, q[t], h * d, d);
                for (int h = 0; h < kvHeads; h++) Array.Copy(LayerNorm(k[t][(h * d)..((h + 1) * d)], $"{attn}.k_layernorm"), 0, k[t], h * d, d);
            }
            Rotate(q[t], heads, positions[t], invFreq, ropeScale);
            Rotate(k[t], kvHeads, positions[t], invFreq, ropeScale);
        }
        var context = SoftmaxAttention(q, k, v, mask, window: null, sinks: null);
        return context.Select(ctx => Linear($"{attn}.dense.weight", ctx, c.HiddenSize, $"{attn}.dense.bias")).ToArray();
    }

    /// <summary>
    /// Causal softmax attention over rotated q [S][heads*d] and k, v [S][kv_heads*d]: key j is visible to
    /// query i when j &lt;= i, its mask entry is set, and (with a window W) j &gt; i - W; scores scaled by
    /// <see cref="HfSpec.AttentionScale"/>. With <paramref name="sinks"/> (GPT-OSS), head h's sink logit joins
    /// the softmax's denominator only: p_j = exp(s_j) / (exp(sink_h) + sum exp(s)).
    /// </summary>
    private double[][] SoftmaxAttention(double[][] q, double[][] k, double[][] v, bool[] mask, int? window, float[]? sinks)
    {
        var c = Spec;
        int length = q.Length, heads = c.NumHeads, d = c.HeadDim, groups = c.NumHeads / c.NumKvHeads;
        var context = new double[length][];
        var scores = new double[length];
        for (int i = 0; i < length; i++)
        {
            context[i] = new double[heads * d];
            for (int h = 0; h < heads; h++)
            {
                int kvHead = h / groups;
                double max = sinks is null ? double.NegativeInfinity : sinks[h];
                bool any = false;
                for (int j = 0; j < length; j++)
                {
                    bool visible = j <= i && mask[j] && (window is not { } w || j > i - w);
                    if (!visible) { scores[j] = double.NegativeInfinity; continue; }
                    double dot = 0;
                    for (int e = 0; e < d; e++) dot += q[i][h * d + e] * k[j][kvHead * d + e];
                    scores[j] = dot * c.AttentionScale;
                    max = Math.Max(max, scores[j]);
                    any = true;
                }
                if (!any) continue; // a padding query sees nothing; its output is unused
                double total = sinks is null ? 0 : Math.Exp(sinks[h] - max);
                for (int j = 0; j < length; j++) total += double.IsNegativeInfinity(scores[j]) ? 0 : Math.Exp(scores[j] - max);
                for (int j = 0; j < length; j++)
                {
                    if (double.IsNegativeInfinity(scores[j])) continue;
                    double weight = Math.Exp(scores[j] - max) / total;
                    for (int e = 0; e < d; e++) context[i][h * d + e] += weight * v[j][kvHead * d + e];
                }
            }
        }
        return context;
    }
}

public static partial class HfWeights
{
    /// <summary>Phi's tensors in PhiForCausalLM's module order.</summary>
    private static IReadOnlyList<TensorSpec> ExpectedPhi(HfSpec c)
    {
        long hidden = c.HiddenSize, inter = c.IntermediateSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        var specs = new List<TensorSpec> { new("model.embed_tokens.weight", [c.VocabSize, hidden]) };
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}", attn = $"{p}.self_attn";
            void Linear(string name, long outputs, long inputs)
            {
                specs.Add(new(name + ".weight", [outputs, inputs]));
                specs.Add(new(name + ".bias", [outputs]));
            }
            Linear($"{attn}.q_proj", q, hidden);
            Linear($"{attn}.k_proj", kv, hidden);
            Linear($"{attn}.v_proj", kv, hidden);
            Linear($"{attn}.dense", hidden, q);
            if (c.QkLayerNorm)
                foreach (var norm in new[] { $"{attn}.q_layernorm", $"{attn}.k_layernorm" })
                {
                    specs.Add(new(norm + ".weight", [c.HeadDim]));
                    specs.Add(new(norm + ".bias", [c.HeadDim]));
                }
            Linear($"{p}.mlp.fc1", inter, hidden);
            Linear($"{p}.mlp.fc2", hidden, inter);
            specs.Add(new($"{p}.input_layernorm.weight", [hidden]));
            specs.Add(new($"{p}.input_layernorm.bias", [hidden]));
        }
        specs.Add(new("model.final_layernorm.weight", [hidden]));
        specs.Add(new("model.final_layernorm.bias", [hidden]));
        if (!c.TieWordEmbeddings) specs.Add(new("lm_head.weight", [c.VocabSize, hidden]));
        specs.Add(new("lm_head.bias", [c.VocabSize]));
        return specs;
    }
}
