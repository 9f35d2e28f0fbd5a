using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// Mixtral: Llama attention with a mixture-of-experts feed-forward block.
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

    private static string Moe(int layer) => $"model.layers.{layer}.block_sparse_moe";

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        yield return new($"{Moe(layer)}.gate.weight", [c.NumExperts, c.HiddenSize]);
        for (int e = 0; e < c.NumExperts; e++)
        {
            string expert = $"{Moe(layer)}.experts.{e}";
            yield return new($"{expert}.w1.weight", [c.IntermediateSize, c.HiddenSize]);
            yield return new($"{expert}.w2.weight", [c.HiddenSize, c.IntermediateSize]);
            if (c.GatedMlp) yield return new($"{expert}.w3.weight", [c.IntermediateSize, c.HiddenSize]);
        }
    }

    protected override Value FeedForward(DecoderGraph g, int layer, Value x, List<Value> routerLogits)
    {
        var c = g.Config;
        var experts = Enumerable.Range(0, c.NumExperts).Select(e => $"{Moe(layer)}.experts.{e}").ToList();
        var names = new MoeWeightNames(
            Router: $"{Moe(layer)}.gate.weight",
            Gate: c.GatedMlp ? experts.Select(e => e + ".w1.weight").ToList() : null,
            Up: experts.Select(e => e + (c.GatedMlp ? ".w3.weight" : ".w1.weight")).ToList(),
            Down: experts.Select(e => e + ".w2.weight").ToList(),
            Prefix: Moe(layer));
        var (output, logits) = Components.Moe.Apply(g, x, names);
        routerLogits.Add(logits);
        return output;
    }
}
