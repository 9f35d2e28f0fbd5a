using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// An independent plain-loop forward pass in double precision for the Hugging Face families Llama,
/// Mistral, Qwen2, Qwen3, Phi-3 (Phi-3.5-mini, Phi-4-mini), Gemma 1, Gemma 2, and Gemma 3 (text), Granite,
/// OLMo 2 and SmolLM3 (<see cref="HfDenseFamilies"/>), StarCoder2 (HfStarcoder2.cs), Qwen3-MoE and Qwen2-MoE
/// (HfQwenMoe.cs), built from the real config.json
/// fields with transformers' semantics (see <see cref="HfSpec"/>, <see cref="HfRope"/>). It uses no ONNX
/// and none of the Modeling graph code; weights are read by their Hugging Face names, and each read
/// checks the shape. Full sequences only: ids [B, S], attention_mask [B, S] (0 = left padding),
/// position_ids [B, S] -> logits [B, S, vocab]. Logits at padded slots are not meaningful (their
/// attention output is taken as zero); compare real tokens only.
/// </summary>
public sealed partial class HfReference
{
    public static readonly string[] KnownActivations = ["silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"];

    private readonly InMemoryWeights _w;

    public HfSpec Spec { get; }

    /// <summary>The last <see cref="Forward"/>'s final-normed hidden states [B, S, hidden] (the LM head's input).</summary>
    public double[] HiddenStates { get; private set; } = [];

    public HfReference(HfSpec spec, InMemoryWeights weights)
    {
        Spec = spec;
        _w = weights;
    }

    public HfReference(string configJson, InMemoryWeights weights) : this(HfSpec.Parse(configJson), weights) { }

    /// <summary>Logits [B, S, vocab] as float (the same numbers as <see cref="Forward"/>, rounded).</summary>
    public float[] ForwardFloat(long[,] ids, long[,] attentionMask, long[,] positionIds) =>
        Forward(ids, attentionMask, positionIds).Select(v => (float)v).ToArray();

    /// <summary>Logits [B, S, vocab] in double precision.</summary>
    public double[] Forward(long[,] ids, long[,] attentionMask, long[,] positionIds)
    {
        var c = Spec;
        int batch = ids.GetLength(0), length = ids.GetLength(1), hidden = c.HiddenSize;
        if (attentionMask.GetLength(0) != batch || attentionMask.GetLength(1) != length || positionIds.GetLength(0) != batch || positionIds.GetLength(1) != length)
            throw new ArgumentException($"attention_mask and position_ids must be [{batch}, {length}] like input_ids (the reference runs whole sequences, no cache)");

        // transformers' dynamic and longrope updates look at the largest position id of the whole batch.
        long maxPositionId = long.MinValue;
        foreach (long p in positionIds) maxPositionId = Math.Max(maxPositionId, p);
        var (invFreq, ropeScale) = c.Rope.Frequencies(maxPositionId);
        // Gemma 3's sliding layers rotate with their own (local) frequencies.
        var (localInvFreq, localRopeScale) = c.LocalRope?.Frequencies(maxPositionId) ?? (invFreq, ropeScale);
        if (c.PhiStyle) return ForwardPhi(ids, attentionMask, positionIds, invFreq, ropeScale);

        var embedding = Tensor("model.embed_tokens.weight", c.VocabSize, hidden);
        var logits = new double[(long)batch * length * c.VocabSize];
        HiddenStates = new double[(long)batch * length * hidden];
        for (int row = 0; row < batch; row++)
        {
            // x[t]: the residual stream [hidden] of slot t of this row.
            var x = new double[length][];
            for (int t = 0; t < length; t++)
            {
                long id = ids[row, t];
                if (id < 0 || id >= c.VocabSize) throw new ArgumentException($"input id {id} at [{row}, {t}] is outside the vocabulary ({c.VocabSize})");
                x[t] = new double[hidden];
                for (int h = 0; h < hidden; h++) x[t][h] = embedding[id * hidden + h];
                // Gemma scales by sqrt(hidden_size) (a float32 constant in transformers; exact here).
                if (c.GemmaStyle) for (int h = 0; h < hidden; h++) x[t][h] *= Math.Sqrt(hidden);
                for (int h = 0; h < hidden; h++) x[t][h] *= c.EmbeddingMultiplier;   // Granite's embedding_multiplier (1 elsewhere)
            }
            var mask = Enumerable.Range(0, length).Select(t => attentionMask[row, t] != 0).ToArray();
            var positions = Enumerable.Range(0, length).Select(t => positionIds[row, t]).ToArray();

            for (int layer = 0; layer < c.NumLayers; layer++)
            {
                string p = $"model.layers.{layer}";
                // OLMo 2 has no input norm: attention reads the residual stream itself.
                var normed = c.PostNormOnly ? x : x.Select(v => BlockNorm(v, $"{p}.input_layernorm")).ToArray();
                bool local = c.LocalRope is not null && c.LayerWindows[layer] is not null;
                var attention = Attention(layer, normed, mask, positions, local ? localInvFreq : invFreq, local ? localRopeScale : ropeScale);
                if (c.SandwichNorms || c.PostNormOnly) attention = attention.Select(v => RmsNorm(v, $"{p}.post_attention_layernorm.weight")).ToArray();
                // Granite scales each block's output by residual_multiplier (1 elsewhere) before the residual add.
                for (int t = 0; t < length; t++) for (int h = 0; h < hidden; h++) x[t][h] += attention[t][h] * c.ResidualMultiplier;

                // Gemma 2 and 3 name their pre-MLP norm pre_feedforward_layernorm and add post_feedforward_layernorm;
                // the others (Gemma 1 too) call the pre-MLP norm post_attention_layernorm.
                // OLMo 2's MLP reads the residual stream and norms its output with post_feedforward_layernorm.
                string preMlp = c.SandwichNorms ? $"{p}.pre_feedforward_layernorm" : $"{p}.post_attention_layernorm";
                for (int t = 0; t < length; t++)
                {
                    var ff = Mlp(layer, c.PostNormOnly ? x[t] : BlockNorm(x[t], preMlp));
                    if (c.SandwichNorms || c.PostNormOnly) ff = RmsNorm(ff, $"{p}.post_feedforward_layernorm.weight");
                    for (int h = 0; h < hidden; h++) x[t][h] += ff[h] * c.ResidualMultiplier;
                }
            }

            string head = c.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
            for (int t = 0; t < length; t++)
            {
                var finalNormed = BlockNorm(x[t], "model.norm");
                Array.Copy(finalNormed, 0, HiddenStates, ((long)row * length + t) * hidden, hidden);
                var result = Linear(head, finalNormed, c.VocabSize, null);
                for (int v = 0; v < c.VocabSize; v++)
                {
                    double value = result[v] / c.LogitsScaling;   // Granite's logits_scaling (1 elsewhere)
                    if (c.FinalLogitSoftcap is { } cap) value = Math.Tanh(value / cap) * cap;
                    logits[((long)row * length + t) * c.VocabSize + v] = value;
                }
            }
        }
        return logits;
    }

    /// <summary>The values of a weight, checking that it exists with exactly this shape.</summary>
    private float[] Tensor(string name, params long[] shape)
    {
        if (!_w.Names.Contains(name)) throw new KeyNotFoundException($"reference: weight '{name}' [{string.Join(", ", shape)}] is missing");
        var actual = _w.Shape(name);
        if (!actual.SequenceEqual(shape))
            throw new ArgumentException($"reference: weight '{name}' is [{string.Join(", ", actual)}], expected [{string.Join(", ", shape)}]");
        return _w.Values(name);
    }

    /// <summary>RMSNorm: x / sqrt(mean(x^2) + eps) * w, or * (1 + w) in Gemma.</summary>
    private double[] RmsNorm(double[] v, string weight)
    {
        var gamma = Tensor(weight, v.Length);
        double meanSquare = 0;
        foreach (double a in v) meanSquare += a * a;
        double inv = 1 / Math.Sqrt(meanSquare / v.Length + Spec.RmsNormEps);
        var result = new double[v.Length];
        for (int i = 0; i < v.Length; i++) result[i] = v[i] * inv * (Spec.GemmaStyle ? 1 + gamma[i] : gamma[i]);
        return result;
    }

    /// <summary>y = W x (+ b) for a PyTorch Linear weight W [outputs, in]; <paramref name="rowOffset"/> picks a block of rows.</summary>
    private double[] Linear(string name, double[] x, int outputs, string? bias, int rowOffset = 0, int? totalRows = null)
    {
        var weight = Tensor(name, totalRows ?? outputs, x.Length);
        var b = bias is null ? null : Tensor(bias, totalRows ?? outputs);
        var y = new double[outputs];
        for (int o = 0; o < outputs; o++)
        {
            long start = (long)(rowOffset + o) * x.Length;
            double sum = 0;
            for (int i = 0; i < x.Length; i++) sum += weight[start + i] * x[i];
            y[o] = sum + (b is null ? 0 : b[rowOffset + o]);
        }
        return y;
    }

    private double Act(double v) => Spec.Activation switch
    {
        "silu" or "swish" => v / (1 + Math.Exp(-v)),
        "gelu" => 0.5 * v * (1 + Erf(v / Math.Sqrt(2))),
        // gelu_new, gelu_pytorch_tanh and gelu_fast are the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))),
        "relu" => Math.Max(v, 0),
        _ => throw new InvalidOperationException($"activation '{Spec.Activation}' has no reference"),
    };

    /// <summary>erf to about 1e-13: Maclaurin series below 3, a continued fraction for erfc above.</summary>
    internal static double Erf(double x)
    {
        double ax = Math.Abs(x);
        if (ax < 3)
        {
            double sum = 0, term = ax;
            for (int n = 0; n < 300 && Math.Abs(term) > 1e-18; n++)
            {
                sum += term / (2 * n + 1);
                term *= -ax * ax / (n + 1);
            }
            return Math.Sign(x) * 2 / Math.Sqrt(Math.PI) * sum;
        }
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))), evaluated from the tail.
        double fraction = ax;
        for (int k = 60; k >= 1; k--) fraction = ax + k / 2.0 / fraction;
        double erfc = Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / fraction;
        return Math.Sign(x) * (1 - erfc);
    }

    /// <summary>down(act(gate x) * up x); Phi-3 reads gate and up as the two row halves of gate_up_proj.</summary>
    private double[] Mlp(int layer, double[] x)
    {
        var c = Spec;
        if (c.Moe is { } moe && moe.SparseLayers[layer]) return SparseMoe(layer, x, moe);
        if (c.GptOss is { } oss) return GptOssExperts(layer, x, oss);
        if (c.Starcoder2Style) return Starcoder2Mlp(layer, x);
        string mlp = $"model.layers.{layer}.mlp";
        int inter = c.IntermediateSize;
        double[] gate, up;
        if (c.FusedProjections)
        {
            gate = Linear($"{mlp}.gate_up_proj.weight", x, inter, null, 0, 2 * inter);
            up = Linear($"{mlp}.gate_up_proj.weight", x, inter, null, inter, 2 * inter);
        }
        else
        {
            gate = Linear($"{mlp}.gate_proj.weight", x, inter, c.MlpBias ? $"{mlp}.gate_proj.bias" : null);
            up = Linear($"{mlp}.up_proj.weight", x, inter, c.MlpBias ? $"{mlp}.up_proj.bias" : null);
        }
        for (int i = 0; i < inter; i++) up[i] *= Act(gate[i]);
        return Linear($"{mlp}.down_proj.weight", up, c.HiddenSize, c.MlpBias ? $"{mlp}.down_proj.bias" : null);
    }

    private double[][] Attention(int layer, double[][] x, bool[] mask, long[] positions, double[] invFreq, double ropeScale)
    {
        var c = Spec;
        int length = x.Length, heads = c.NumHeads, kvHeads = c.NumKvHeads, d = c.HeadDim;
        int qWidth = heads * d, kvWidth = kvHeads * d;
        string attn = $"model.layers.{layer}.self_attn";
        string? Bias(string part) => c.QkvBias ? $"{attn}.{part}.bias" : null;

        // q[t] [heads*d], k[t] and v[t] [kvHeads*d], head-major as transformers' view(..., heads, head_dim).
        double[][] q = new double[length][], k = new double[length][], v = new double[length][];
        for (int t = 0; t < length; t++)
        {
            if (c.FusedProjections)
            {
                int rows = qWidth + 2 * kvWidth;
                q[t] = Linear($"{attn}.qkv_proj.weight", x[t], qWidth, null, 0, rows);
                k[t] = Linear($"{attn}.qkv_proj.weight", x[t], kvWidth, null, qWidth, rows);
                v[t] = Linear($"{attn}.qkv_proj.weight", x[t], kvWidth, null, qWidth + kvWidth, rows);
            }
            else
            {
                q[t] = Linear($"{attn}.q_proj.weight", x[t], qWidth, Bias("q_proj"));
                k[t] = Linear($"{attn}.k_proj.weight", x[t], kvWidth, Bias("k_proj"));
                v[t] = Linear($"{attn}.v_proj.weight", x[t], kvWidth, Bias("v_proj"));
            }
            if (c.QkNorm)
            {
                NormHeads(q[t], heads, $"{attn}.q_norm.weight");
                NormHeads(k[t], kvHeads, $"{attn}.k_norm.weight");
            }
            if (c.QkNormWhole)
            {
                // OLMo 2: one RMSNorm over the whole projection (every head together).
                q[t] = RmsNorm(q[t], $"{attn}.q_norm.weight");
                k[t] = RmsNorm(k[t], $"{attn}.k_norm.weight");
            }
            // SmolLM3's NoPE layers (no_rope_layers[i] == 0) skip rotary.
            if (c.LayerRotates is not { } rotates || rotates[layer])
            {
                Rotate(q[t], heads, positions[t], invFreq, ropeScale);
                Rotate(k[t], kvHeads, positions[t], invFreq, ropeScale);
            }
        }

        int? window = c.LayerWindows[layer];
        if (c.GptOss is not null)
            return SoftmaxAttention(q, k, v, mask, window, Tensor($"{attn}.sinks", heads))
                .Select(ctx => Linear($"{attn}.o_proj.weight", ctx, c.HiddenSize, c.OutputBias ? $"{attn}.o_proj.bias" : null)).ToArray();
        int groups = heads / kvHeads;
        var context = new double[length][];
        var scores = new double[length];
        for (int i = 0; i < length; i++)
        {
            context[i] = new double[qWidth];
            for (int h = 0; h < heads; h++)
            {
                int kvHead = h / groups;
                double max = double.NegativeInfinity;
                for (int j = 0; j < length; j++)
                {
                    // Causal over slots, padding keys masked, and transformers' sliding_window_overlay:
                    // key j is kept when j > i - W.
                    bool visible = j <= i && mask[j] && (window is not { } w || j > i - w);
                    if (!visible) { scores[j] = double.NegativeInfinity; continue; }
                    double dot = 0;
                    for (int e = 0; e < d; e++) dot += q[i][h * d + e] * k[j][kvHead * d + e];
                    double score = dot * c.AttentionScale;
                    // Gemma 2 soft-caps after scaling and before the mask.
                    if (c.AttentionSoftcap is { } cap) score = Math.Tanh(score / cap) * cap;
                    scores[j] = score;
                    max = Math.Max(max, score);
                }
                if (double.IsNegativeInfinity(max)) continue; // a padding query sees nothing; its output is unused
                double total = 0;
                for (int j = 0; j < length; j++) total += double.IsNegativeInfinity(scores[j]) ? 0 : Math.Exp(scores[j] - max);
                for (int j = 0; j < length; j++)
                {
                    if (double.IsNegativeInfinity(scores[j])) continue;
                    double weight = Math.Exp(scores[j] - max) / total;
                    for (int e = 0; e < d; e++) context[i][h * d + e] += weight * v[j][kvHead * d + e];
                }
            }
        }
        return context.Select(ctx => Linear($"{attn}.o_proj.weight", ctx, c.HiddenSize, c.OutputBias ? $"{attn}.o_proj.bias" : null)).ToArray();
    }

    /// <summary>Qwen3's q_norm / k_norm: RMSNorm over each head's head_dim values with one weight [head_dim].</summary>
    private void NormHeads(double[] vector, int heads, string weight)
    {
        int d = Spec.HeadDim;
        for (int h = 0; h < heads; h++)
        {
            var normed = RmsNorm(vector[(h * d)..((h + 1) * d)], weight);
            Array.Copy(normed, 0, vector, h * d, d);
        }
    }

    /// <summary>
    /// Rotates the first rot = rope.Dim dims of each head as two halves (i, i + rot/2), transformers'
    /// rotate_half on q[..., :rot]; the remaining head_dim - rot dims pass through. cos and sin carry the
    /// attention factor.
    /// </summary>
    private void Rotate(double[] vector, int heads, long position, double[] invFreq, double scale)
    {
        int d = Spec.HeadDim, half = Spec.Rope.Dim / 2;
        for (int h = 0; h < heads; h++)
        {
            int start = h * d;
            for (int i = 0; i < half; i++)
            {
                double angle = position * invFreq[i];
                double cos = Math.Cos(angle) * scale, sin = Math.Sin(angle) * scale;
                double x1 = vector[start + i], x2 = vector[start + i + half];
                vector[start + i] = x1 * cos - x2 * sin;
                vector[start + i + half] = x2 * cos + x1 * sin;
            }
        }
    }
}
