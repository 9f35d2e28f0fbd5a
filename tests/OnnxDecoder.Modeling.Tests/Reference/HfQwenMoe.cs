using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>
/// The routed experts of Qwen3-MoE and Qwen2-MoE as transformers' Qwen3MoeConfig / Qwen2MoeConfig and
/// modular_qwen2_moe.py define them (Qwen2MoeDecoderLayer picks the block, Qwen2MoeTopKRouter routes, Qwen3-MoE
/// reuses both): layer i holds experts when i is not in mlp_only_layers (default []), num_experts &gt; 0 and
/// (i + 1) % decoder_sparse_step (default 1) == 0, else a dense MLP of intermediate_size. Routing: logits =
/// gate.weight x (no bias), softmax over all experts, the top num_experts_per_tok kept, divided by their sum when
/// norm_topk_prob (default false). Experts: down(act(gate x) * up x) of moe_intermediate_size, act = hidden_act.
/// Qwen2MoeSparseMoeBlock adds a shared expert every token passes through (a gated MLP of
/// shared_expert_intermediate_size), scaled by sigmoid(shared_expert_gate.weight x) ([1, hidden], no bias);
/// Qwen3-MoE has none. Defaults: Qwen3MoeConfig 128 experts, top 8, width 768; Qwen2MoeConfig 60, top 4, width 1408,
/// shared width 5632.
/// </summary>
public sealed record HfMoe(int NumExperts, int TopK, bool NormTopKProb, int MoeIntermediateSize, bool[] SparseLayers,
    int SharedExpertIntermediateSize = 0)
{
    /// <summary>Whether the sparse block has Qwen2-MoE's shared expert and its gate.</summary>
    public bool HasSharedExpert { get; init; }

    internal static HfMoe? Read(HfSpec.Fields f, string modelType, int layers)
    {
        if (modelType is not ("qwen3_moe" or "qwen2_moe")) return null;
        bool qwen2 = modelType == "qwen2_moe";
        int experts = f.Int("num_experts") ?? (qwen2 ? 60 : 128), step = f.Int("decoder_sparse_step") ?? 1;
        if (step < 1) throw new FormatException($"{f.Source}: decoder_sparse_step ({step}) must be at least 1");
        var denseOnly = f.IntList("mlp_only_layers") ?? [];
        var sparse = Enumerable.Range(0, layers).Select(i => !denseOnly.Contains(i) && experts > 0 && (i + 1) % step == 0).ToArray();
        int topK = f.Int("num_experts_per_tok") ?? (qwen2 ? 4 : 8);
        if (sparse.Any(s => s) && (topK < 1 || topK > experts)) throw new FormatException($"{f.Source}: num_experts_per_tok ({topK}) must be between 1 and num_experts ({experts})");
        int shared = qwen2 ? f.Int("shared_expert_intermediate_size") ?? 5632 : 0;
        if (shared < 0) throw new FormatException($"{f.Source}: shared_expert_intermediate_size ({shared}) must not be negative");
        return new HfMoe(experts, topK, f.Bool("norm_topk_prob") ?? false, f.Int("moe_intermediate_size") ?? (qwen2 ? 1408 : 768), sparse, shared)
        {
            HasSharedExpert = qwen2,
        };
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
        if (!moe.HasSharedExpert) return output;

        // Qwen2MoeSparseMoeBlock: + sigmoid(shared_expert_gate x) * shared_expert(x), for every token.
        int width = moe.SharedExpertIntermediateSize;
        var sharedGate = Linear($"{mlp}.shared_expert.gate_proj.weight", x, width, null);
        var sharedUp = Linear($"{mlp}.shared_expert.up_proj.weight", x, width, null);
        for (int i = 0; i < width; i++) sharedUp[i] *= Act(sharedGate[i]);
        var sharedOut = Linear($"{mlp}.shared_expert.down_proj.weight", sharedUp, x.Length, null);
        double scale = 1 / (1 + Math.Exp(-Linear($"{mlp}.shared_expert_gate.weight", x, 1, null)[0]));
        for (int h = 0; h < x.Length; h++) output[h] += scale * sharedOut[h];
        return output;
    }
}

public static partial class HfWeights
{
    /// <summary>A sparse layer's router and experts, in checkpoint order (gate, then each expert's gate_proj, up_proj, down_proj), then
    /// Qwen2-MoE's shared expert and its gate.</summary>
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
        if (!moe.HasSharedExpert) yield break;
        long shared = moe.SharedExpertIntermediateSize;
        yield return new($"{mlp}.shared_expert.gate_proj.weight", [shared, hidden]);
        yield return new($"{mlp}.shared_expert.up_proj.weight", [shared, hidden]);
        yield return new($"{mlp}.shared_expert.down_proj.weight", [hidden, shared]);
        yield return new($"{mlp}.shared_expert_gate.weight", [1, hidden]);
    }
}
