using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// A plain-loop forward pass in double precision that uses no ONNX and none of the Modeling code:
/// the independent judge of our graphs. It reads weights by their Hugging Face names (Llama and
/// Mixtral layouts, or GPT-2's) and runs full sequences: ids [B, S], attention mask [B, S]
/// (0 = left padding), positions [B, S] -> logits [B, S, vocab].
/// </summary>
public sealed class ReferenceDecoder(DecoderConfig c, InMemoryWeights w)
{
    private readonly bool _gpt2 = c.ModelType == "gpt2";

    /// <summary>Experts chosen per layer, per (batch row, position), in top-k order.</summary>
    public List<int[][]> ChosenExperts { get; } = [];

    /// <summary>Router logits per layer, [B*S][experts].</summary>
    public List<double[][]> RouterLogits { get; } = [];

    public float[] Forward(long[,] ids, long[,] mask, long[,] positions)
    {
        int batch = ids.GetLength(0), length = ids.GetLength(1), hidden = c.HiddenSize;
        ChosenExperts.Clear();
        RouterLogits.Clear();
        var logits = new float[batch * length * c.VocabSize];
        for (int row = 0; row < batch; row++)
        {
            // x[t][h]: the residual stream of this row.
            var x = new double[length][];
            for (int t = 0; t < length; t++)
            {
                x[t] = Row(_gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight", ids[row, t], hidden);
                if (c.Positions == PositionKind.Learned)
                {
                    var p = Row(_gpt2 ? "transformer.wpe.weight" : "model.embed_positions.weight", positions[row, t], hidden);
                    for (int h = 0; h < hidden; h++) x[t][h] += p[h];
                }
            }
            long[] rowPositions = Enumerable.Range(0, length).Select(t => positions[row, t]).ToArray();
            long maxPosition = Enumerable.Range(0, batch).SelectMany(r => Enumerable.Range(0, length).Select(t => positions[r, t])).Max();
            for (int layer = 0; layer < c.NumLayers; layer++)
            {
                var normed = x.Select(v => Normalize(v, InputNorm(layer))).ToArray();
                var attention = Attend(layer, normed, rowPositions, Enumerable.Range(0, length).Select(t => mask[row, t]).ToArray(), maxPosition);
                for (int t = 0; t < length; t++) for (int h = 0; h < hidden; h++) x[t][h] += attention[t][h];
                normed = x.Select(v => Normalize(v, PostNorm(layer))).ToArray();
                for (int t = 0; t < length; t++)
                {
                    var ff = c.IsMoe ? MixtureOfExperts(layer, normed[t], row, t, batch, length) : DenseMlp(layer, normed[t]);
                    for (int h = 0; h < hidden; h++) x[t][h] += ff[h];
                }
            }
            for (int t = 0; t < length; t++)
            {
                var normed = Normalize(x[t], _gpt2 ? "transformer.ln_f" : "model.norm");
                string head = c.TieWordEmbeddings ? (_gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight") : "lm_head.weight";
                var result = LinearOutIn(head, normed, c.VocabSize);
                for (int v = 0; v < c.VocabSize; v++) logits[(row * length + t) * c.VocabSize + v] = (float)result[v];
            }
        }
        return logits;
    }

    private string InputNorm(int layer) => _gpt2 ? $"transformer.h.{layer}.ln_1" : $"model.layers.{layer}.input_layernorm";
    private string PostNorm(int layer) => _gpt2 ? $"transformer.h.{layer}.ln_2" : $"model.layers.{layer}.post_attention_layernorm";

    private double[] Row(string name, long index, int width)
    {
        var values = w.Values(name);
        var row = new double[width];
        for (int i = 0; i < width; i++) row[i] = values[index * width + i];
        return row;
    }

    private double[] Normalize(double[] v, string prefix)
    {
        var gamma = w.Values(prefix + ".weight");
        int n = v.Length;
        var result = new double[n];
        if (c.Norm == NormKind.RmsNorm)
        {
            double meanSquare = v.Sum(a => a * a) / n;
            double inv = 1 / Math.Sqrt(meanSquare + c.NormEps);
            for (int i = 0; i < n; i++) result[i] = v[i] * inv * gamma[i];
        }
        else
        {
            var beta = w.Values(prefix + ".bias");
            double mean = v.Average();
            double variance = v.Sum(a => (a - mean) * (a - mean)) / n;
            double inv = 1 / Math.Sqrt(variance + c.NormEps);
            for (int i = 0; i < n; i++) result[i] = (v[i] - mean) * inv * gamma[i] + beta[i];
        }
        return result;
    }

    /// <summary>y = W x for a PyTorch Linear weight W [out, in].</summary>
    private double[] LinearOutIn(string name, double[] x, int outputs, string? bias = null)
    {
        var weight = w.Values(name);
        var y = new double[outputs];
        for (int o = 0; o < outputs; o++)
        {
            double sum = 0;
            for (int i = 0; i < x.Length; i++) sum += weight[(long)o * x.Length + i] * x[i];
            y[o] = sum + (bias is null ? 0 : w.Values(bias)[o]);
        }
        return y;
    }

    /// <summary>y = x W for a GPT-2 Conv1D weight W [in, out].</summary>
    private double[] LinearInOut(string name, double[] x, int outputs, string bias)
    {
        var weight = w.Values(name);
        var b = w.Values(bias);
        var y = new double[outputs];
        for (int o = 0; o < outputs; o++)
        {
            double sum = b[o];
            for (int i = 0; i < x.Length; i++) sum += weight[(long)i * outputs + o] * x[i];
            y[o] = sum;
        }
        return y;
    }

    private double Act(double v) => c.HiddenAct switch
    {
        Activation.Silu => v / (1 + Math.Exp(-v)),
        Activation.Gelu => 0.5 * v * (1 + Erf(v / Math.Sqrt(2))),
        _ => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))),
    };

    // Abramowitz-Stegun 7.1.26 is too coarse for 1e-4; use a series / continued fraction pair.
    private static double Erf(double x)
    {
        double ax = Math.Abs(x);
        double result;
        if (ax < 3)
        {
            double sum = 0, term = ax;
            for (int n = 0; n < 200; n++)
            {
                sum += term / (2 * n + 1);
                term *= -ax * ax / (n + 1);
                if (Math.Abs(term) < 1e-17) break;
            }
            result = 2 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            result = 1; // erf(3) = 0.99997791; beyond it the difference is below 2.3e-5 * exp(-(x^2 - 9))
            double tail = Math.Exp(-ax * ax) / (ax * Math.Sqrt(Math.PI));
            result -= tail * (1 - 1 / (2 * ax * ax));
        }
        return Math.Sign(x) * result;
    }

    private double[] DenseMlp(int layer, double[] x)
    {
        if (_gpt2)
        {
            var h = LinearInOut($"transformer.h.{layer}.mlp.c_fc.weight", x, c.IntermediateSize, $"transformer.h.{layer}.mlp.c_fc.bias");
            for (int i = 0; i < h.Length; i++) h[i] = Act(h[i]);
            return LinearInOut($"transformer.h.{layer}.mlp.c_proj.weight", h, c.HiddenSize, $"transformer.h.{layer}.mlp.c_proj.bias");
        }
        string mlp = $"model.layers.{layer}.mlp";
        // transformers' Llama: mlp_bias biases every projection of the MLP.
        bool bias = c.ProjectionBias;
        return Expert(x, c.GatedMlp ? $"{mlp}.gate_proj.weight" : null, $"{mlp}.up_proj.weight", $"{mlp}.down_proj.weight",
            bias ? $"{mlp}.up_proj.bias" : null, bias ? $"{mlp}.down_proj.bias" : null, bias && c.GatedMlp ? $"{mlp}.gate_proj.bias" : null);
    }

    private double[] Expert(double[] x, string? gate, string up, string down, string? upBias = null, string? downBias = null, string? gateBias = null)
    {
        var u = LinearOutIn(up, x, c.IntermediateSize, upBias);
        if (gate is not null)
        {
            var g = LinearOutIn(gate, x, c.IntermediateSize, gateBias);
            for (int i = 0; i < u.Length; i++) u[i] = Act(g[i]) * u[i];
        }
        else
        {
            for (int i = 0; i < u.Length; i++) u[i] = Act(u[i]);
        }
        return LinearOutIn(down, u, c.HiddenSize, downBias);
    }

    private double[] MixtureOfExperts(int layer, double[] x, int row, int t, int batch, int length)
    {
        bool qwen = c.ModelType == "qwen2_moe";
        string moe = qwen ? $"model.layers.{layer}.mlp" : $"model.layers.{layer}.block_sparse_moe";
        var logits = LinearOutIn($"{moe}.gate.weight", x, c.NumExperts);
        if (layer == RouterLogits.Count) { RouterLogits.Add(new double[batch * length][]); ChosenExperts.Add(new int[batch * length][]); }
        RouterLogits[layer][row * length + t] = logits;

        double max = logits.Max();
        var probabilities = logits.Select(l => Math.Exp(l - max)).ToArray();
        double total = probabilities.Sum();
        for (int e = 0; e < probabilities.Length; e++) probabilities[e] /= total;
        var chosen = Enumerable.Range(0, c.NumExperts).OrderByDescending(e => probabilities[e]).ThenBy(e => e).Take(c.ExpertsPerToken).ToArray();
        ChosenExperts[layer][row * length + t] = chosen;
        double chosenTotal = chosen.Sum(e => probabilities[e]);

        var y = new double[c.HiddenSize];
        foreach (int e in chosen)
        {
            double weight = c.NormTopKProb ? probabilities[e] / chosenTotal : probabilities[e];
            string expert = $"{moe}.experts.{e}";
            var output = qwen
                ? Expert(x, $"{expert}.gate_proj.weight", $"{expert}.up_proj.weight", $"{expert}.down_proj.weight")
                : Expert(x, c.GatedMlp ? $"{expert}.w1.weight" : null, c.GatedMlp ? $"{expert}.w3.weight" : $"{expert}.w1.weight", $"{expert}.w2.weight");
            for (int h = 0; h < y.Length; h++) y[h] += weight * output[h];
        }
        if (qwen && c.SharedExpertIntermediateSize > 0)
        {
            // y += sigmoid(w_gate . x) * shared_expert(x)
            var u = LinearOutIn($"{moe}.shared_expert.up_proj.weight", x, c.SharedExpertIntermediateSize);
            var g = LinearOutIn($"{moe}.shared_expert.gate_proj.weight", x, c.SharedExpertIntermediateSize);
            for (int i = 0; i < u.Length; i++) u[i] *= Act(g[i]);
            var shared = LinearOutIn($"{moe}.shared_expert.down_proj.weight", u, c.HiddenSize);
            double gate = 1 / (1 + Math.Exp(-LinearOutIn($"{moe}.shared_expert_gate.weight", x, 1)[0]));
            for (int h = 0; h < y.Length; h++) y[h] += gate * shared[h];
        }
        return y;
    }

    private double[][] Attend(int layer, double[][] x, long[] positions, long[] mask, long maxPosition)
    {
        int length = x.Length, heads = c.NumHeads, kvHeads = c.NumKvHeads, d = c.HeadDim;
        double[][] q = new double[length][], k = new double[length][], v = new double[length][];
        for (int t = 0; t < length; t++)
        {
            if (_gpt2)
            {
                var qkv = LinearInOut($"transformer.h.{layer}.attn.c_attn.weight", x[t], 3 * c.HiddenSize, $"transformer.h.{layer}.attn.c_attn.bias");
                q[t] = qkv[..c.HiddenSize];
                k[t] = qkv[c.HiddenSize..(2 * c.HiddenSize)];
                v[t] = qkv[(2 * c.HiddenSize)..];
            }
            else
            {
                string attn = $"model.layers.{layer}.self_attn";
                string? Bias(string p) => c.AttentionBias ? $"{attn}.{p}.bias" : null;
                q[t] = LinearOutIn($"{attn}.q_proj.weight", x[t], heads * d, Bias("q_proj"));
                k[t] = LinearOutIn($"{attn}.k_proj.weight", x[t], kvHeads * d, Bias("k_proj"));
                v[t] = LinearOutIn($"{attn}.v_proj.weight", x[t], kvHeads * d, Bias("v_proj"));
            }
            if (c.Positions == PositionKind.Rotary)
            {
                var (inv, multiplier) = Frequencies(maxPosition);
                RotateHeads(q[t], heads, positions[t], inv, multiplier);
                RotateHeads(k[t], kvHeads, positions[t], inv, multiplier);
            }
        }

        var context = new double[length][];
        int groups = heads / kvHeads;
        for (int i = 0; i < length; i++)
        {
            context[i] = new double[heads * d];
            for (int h = 0; h < heads; h++)
            {
                int kvHead = h / groups;
                var scores = new List<(int J, double Score)>();
                for (int j = 0; j <= i; j++)
                {
                    if (mask[j] == 0) continue;
                    if (c.SlidingWindow is { } window && i - j >= window) continue;
                    double dot = 0;
                    for (int e = 0; e < d; e++) dot += q[i][h * d + e] * k[j][kvHead * d + e];
                    scores.Add((j, dot / Math.Sqrt(d)));
                }
                if (scores.Count == 0) continue; // a padding query: its output is never used
                double max = scores.Max(s => s.Score);
                double total = scores.Sum(s => Math.Exp(s.Score - max));
                foreach (var (j, score) in scores)
                {
                    double p = Math.Exp(score - max) / total;
                    for (int e = 0; e < d; e++) context[i][h * d + e] += p * v[j][kvHead * d + e];
                }
            }
        }
        return context.Select(ctx => _gpt2
            ? LinearInOut($"transformer.h.{layer}.attn.c_proj.weight", ctx, c.HiddenSize, $"transformer.h.{layer}.attn.c_proj.bias")
            : LinearOutIn($"model.layers.{layer}.self_attn.o_proj.weight", ctx, c.HiddenSize, OutputBias ? $"model.layers.{layer}.self_attn.o_proj.bias" : null)).ToArray();
    }

    /// <summary>transformers' Llama puts attention_bias on o_proj as on q, k and v; Qwen2, Mistral and the MoE families have no o_proj bias.</summary>
    private bool OutputBias => c.ModelType == "llama" && c.AttentionBias;

    private void RotateHeads(double[] vector, int heads, long position, double[] inv, double multiplier)
    {
        int d = c.HeadDim, rot = c.RotaryDim, half = rot / 2;
        for (int h = 0; h < heads; h++)
        {
            int start = h * d;
            for (int i = 0; i < half; i++)
            {
                double angle = position * inv[i];
                double cos = Math.Cos(angle) * multiplier, sin = Math.Sin(angle) * multiplier;
                int a = c.RotaryLayout == RotaryLayout.HalfSplit ? start + i : start + 2 * i;
                int b = c.RotaryLayout == RotaryLayout.HalfSplit ? start + i + half : start + 2 * i + 1;
                double x1 = vector[a], x2 = vector[b];
                vector[a] = x1 * cos - x2 * sin;
                vector[b] = x2 * cos + x1 * sin;
            }
        }
    }

    /// <summary>Inverse frequencies of each scaling type, written from Hugging Face's published formulas.</summary>
    private (double[] Inv, double Multiplier) Frequencies(long maxPosition)
    {
        int rot = c.RotaryDim;
        double theta = c.RopeTheta;
        var s = c.RopeScaling;
        if (s.Type == RopeScalingType.Dynamic)
        {
            double length = Math.Max(maxPosition + 1, c.MaxPositions);
            theta *= Math.Pow(s.Factor * length / c.MaxPositions - (s.Factor - 1), rot / (rot - 2.0));
        }
        var inv = Enumerable.Range(0, rot / 2).Select(i => Math.Pow(theta, -2.0 * i / rot)).ToArray();
        switch (s.Type)
        {
            case RopeScalingType.Linear:
                return (inv.Select(f => f / s.Factor).ToArray(), 1);
            case RopeScalingType.Llama3:
            {
                double old = s.OriginalMaxPositions!.Value;
                return (inv.Select(f =>
                {
                    double wavelength = 2 * Math.PI / f;
                    if (wavelength < old / s.HighFreqFactor) return f;
                    if (wavelength > old / s.LowFreqFactor) return f / s.Factor;
                    double smooth = (old / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    return (1 - smooth) * f / s.Factor + smooth * f;
                }).ToArray(), 1);
            }
            case RopeScalingType.Yarn:
            {
                double original = s.OriginalMaxPositions ?? c.MaxPositions;
                double Dim(double rotations) => rot * Math.Log(original / (rotations * 2 * Math.PI)) / (2 * Math.Log(c.RopeTheta));
                double low = Math.Max(Math.Floor(Dim(s.BetaFast)), 0), high = Math.Min(Math.Ceiling(Dim(s.BetaSlow)), rot - 1);
                if (low == high) high += 0.001;
                var result = new double[inv.Length];
                for (int i = 0; i < inv.Length; i++)
                {
                    double extrapolation = 1 - Math.Clamp((i - low) / (high - low), 0, 1);
                    result[i] = inv[i] / s.Factor * (1 - extrapolation) + inv[i] * extrapolation;
                }
                return (result, s.AttentionFactor ?? 0.1 * Math.Log(s.Factor) + 1);
            }
            default:
                return (inv, 1);
        }
    }
}
