using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// Qwen3-MoE's routed experts as transformers' Qwen3MoeConfig / Qwen3MoeSparseMoeBlock define them
/// (Qwen2MoeDecoderLayer picks the block, Qwen2MoeTopKRouter routes): layer i holds experts when i is
/// not in mlp_only_layers (default []), num_experts (default 128) &gt; 0 and (i + 1) % decoder_sparse_step
/// (default 1) == 0, else a dense MLP of intermediate_size. Routing: logits = gate.weight x (no bias),
/// softmax over all experts, the top num_experts_per_tok (default 8) kept, divided by their sum when
/// norm_topk_prob (default false); no shared expert. Experts: down(act(gate x) * up x) of
/// moe_intermediate_size (default 768), act = hidden_act.
/// </summary>
public sealed record HfMoe(int NumExperts, int TopK, bool NormTopKProb, int MoeIntermediateSize, bool[] SparseLayers)
{
    internal static HfMoe? Read(HfSpec.Fields f, string modelType, int layers)
    {
        if (modelType != "qwen3_moe") return null;
        int experts = f.Int("num_experts") ?? 128, step = f.Int("decoder_sparse_step") ?? 1;
        if (step < 1) throw new FormatException($"{f.Source}: decoder_sparse_step ({step}) must be at least 1");
        var denseOnly = f.IntList("mlp_only_layers") ?? [];
        var sparse = Enumerable.Range(0, layers).Select(i => !denseOnly.Contains(i) && experts > 0 && (i + 1) % step == 0).ToArray();
        int topK = f.Int("num_experts_per_tok") ?? 8;
        if (sparse.Any(s => s) && (topK < 1 || topK > experts)) throw new FormatException($"{f.Source}: num_experts_per_tok ({topK}) must be between 1 and num_experts ({experts})");
        return new HfMoe(experts, topK, f.Bool("norm_topk_prob") ?? false, f.Int("moe_intermediate_size") ?? 768, sparse);
    }
}

public sealed partial class HfReference
{
    /// <summary>The experts each token chose in the last forward pass, per layer (null for dense layers), in rank order.</summary>
    public List<int[]>?[] ChosenExperts { get; private set; } = [];

    private double[] SparseMoe(int layer, double[] x, HfMoe moe)
    {
        string mlp = $"model.layers.{layer}.mlp";
        // Every expert is a weight of the model, chosen or not: each is checked, as loading the checkpoint would.
        for (int e = 0; e < moe.NumExperts; e++)
        {
            Tensor($"{mlp}.experts.{e}.gate_proj.weight", moe.MoeIntermediateSize, x.Length);
            Tensor($"{mlp}.experts.{e}.up_proj.weight", moe.MoeIntermediateSize, x.Length);
            Tensor($"{mlp}.experts.{e}.down_proj.weight", x.Length, moe.MoeIntermediateSize);
        }
        var logits = Linear($"{mlp}.gate.weight", x, moe.NumExperts, null);
        double max = logits.Max();
        var probabilities = logits.Select(l => Math.Exp(l - max)).ToArray();
        double total = probabilities.Sum();
        for (int e = 0; e < probabilities.Length; e++) probabilities[e] /= total;
        var chosen = Enumerable.Range(0, moe.NumExperts).OrderByDescending(e => probabilities[e]).ThenBy(e => e).Take(moe.TopK).ToArray();
        double chosenSum = chosen.Sum(e => probabilities[e]);
        if (ChosenExperts.Length != Spec.NumLayers) ChosenExperts = new List<int[]>?[Spec.NumLayers];
        (ChosenExperts[layer] ??= []).Add(chosen);

        var output = new double[x.Length];
        foreach (int e in chosen)
        {
            double weight = moe.NormTopKProb ? probabilities[e] / chosenSum : probabilities[e];
            string expert = $"{mlp}.experts.{e}";
            var gate = Linear($"{expert}.gate_proj.weight", x, moe.MoeIntermediateSize, null);
            var up = Linear($"{expert}.up_proj.weight", x, moe.MoeIntermediateSize, null);
            for (int i = 0; i < up.Length; i++) up[i] *= Act(gate[i]);
            var y = Linear($"{expert}.down_proj.weight", up, x.Length, null);
            for (int h = 0; h < x.Length; h++) output[h] += weight * y[h];
        }
        return output;
    }
}

public static partial class HfWeights
{
    /// <summary>A sparse layer's router and experts, in checkpoint order (gate, then each expert's gate_proj, up_proj, down_proj).</summary>
    private static IEnumerable<TensorSpec> MoeSpecs(HfSpec c, HfMoe moe, int layer)
    {
        string mlp = $"model.layers.{layer}.mlp";
        long hidden = c.HiddenSize, inter = moe.MoeIntermediateSize;
        yield return new($"{mlp}.gate.weight", [moe.NumExperts, hidden]);
        for (int e = 0; e < moe.NumExperts; e++)
        {
            yield return new($"{mlp}.experts.{e}.gate_proj.weight", [inter, hidden]);
            yield return new($"{mlp}.experts.{e}.up_proj.weight", [inter, hidden]);
            yield return new($"{mlp}.experts.{e}.down_proj.weight", [hidden, inter]);
        }
    }
}
