using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Mixtral: Llama attention with a mixture-of-experts feed-forward block; sliding_window, when not null, on every layer.
/// <code>
///   model.layers.{i}.block_sparse_moe.gate.weight          [experts, hidden]   (the router)
///   model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight [intermediate, hidden]  gate (fc for plain experts)
///   model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight [intermediate, hidden]  up (SwiGLU experts only)
///   model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight [hidden, intermediate]  down
/// </code>
/// </summary>
public sealed class Mixtral : Llama
{
    public override string Name => "mixtral";
    public override IReadOnlyList<string> ModelTypes => ["mixtral"];
    public override IReadOnlyList<string> Architectures => ["MixtralForCausalLM"];
    public override bool HasExperts => true;

    /// <summary>MixtralConfig's rule: sliding_window (null by default) on every layer, no use_sliding_window switch;
    /// MixtralAttention hands config.sliding_window to the attention and MixtralModel picks the sliding mask whenever
    /// it is not null, so a use_sliding_window beside it changes nothing.</summary>
    protected override (int? Window, bool[]? Layers) ReadSlidingWindow(ConfigFields r, string modelType) => (r.Int("sliding_window"), null);

    private static MoeWeightNames MoeNames(DecoderConfig c, int layer)
    {
        string moe = $"model.layers.{layer}.block_sparse_moe";
        var experts = Enumerable.Range(0, c.NumExperts).Select(e => $"{moe}.experts.{e}").ToList();
        return new MoeWeightNames(
            Router: $"{moe}.gate.weight",
            Gate: c.GatedMlp ? experts.Select(e => e + ".w1.weight").ToList() : null,
            Up: experts.Select(e => e + (c.GatedMlp ? ".w3.weight" : ".w1.weight")).ToList(),
            Down: experts.Select(e => e + ".w2.weight").ToList(),
            Prefix: moe);
    }

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        var names = MoeNames(c, layer);
        yield return new(names.Router, [c.NumExperts, c.HiddenSize]);
        for (int e = 0; e < c.NumExperts; e++)
        {
            // Checkpoint order: w1 (gate, or fc), w2 (down), w3 (up of SwiGLU experts).
            yield return new(names.Gate?[e] ?? names.Up[e], [c.IntermediateSize, c.HiddenSize]);
            yield return new(names.Down[e], [c.HiddenSize, c.IntermediateSize]);
            if (names.Gate is not null) yield return new(names.Up[e], [c.IntermediateSize, c.HiddenSize]);
        }
    }

    protected override IEnumerable<GgufTensorName> GgufFeedForwardNames(DecoderConfig c, int layer)
    {
        var names = MoeNames(c, layer);
        string blk = $"blk.{layer}";
        yield return new($"{blk}.ffn_gate_inp.weight", names.Router);
        for (int e = 0; e < c.NumExperts; e++)
        {
            string gate = names.Gate?[e] ?? names.Up[e];
            yield return new($"{blk}.ffn_gate_exps.weight", gate, e);
            yield return new($"{blk}.ffn_up_exps.weight", names.Up[e], e);
            yield return new($"{blk}.ffn_down_exps.weight", names.Down[e], e);
            // Older GGUFs store each expert separately.
            yield return new($"{blk}.ffn_gate.{e}.weight", gate);
            yield return new($"{blk}.ffn_up.{e}.weight", names.Up[e]);
            yield return new($"{blk}.ffn_down.{e}.weight", names.Down[e]);
        }
    }

    protected override Value FeedForward(DecoderGraph g, int layer, Value x)
    {
        var (output, logits) = Components.Moe.Apply(g, x, MoeNames(g.Config, layer));
        g.RouterLogits.Add(logits);
        return output;
    }
}
