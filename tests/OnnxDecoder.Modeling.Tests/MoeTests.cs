using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

public class MoeTests
{
    [TestCase(4, 1, true)]
    [TestCase(8, 2, false)]
    public void Experts_chosen_per_token_equal_the_reference_top_k(int experts, int k, bool renormalise)
    {
        var config = TestConfigs.Base with { ModelType = "mixtral", NumExperts = experts, ExpertsPerToken = k, NormTopKProb = renormalise };
        var weights = TestConfigs.Weights(config);
        var ids = Tokens(2, 7, config.VocabSize, seed: 8);
        var reference = new ReferenceDecoder(config, weights);
        reference.Forward(ids, Ones(2, 7), Positions(2, 0, 7));

        using var decoder = new OrtDecoder(config, weights, new ExportOptions { RouterLogitsOutputs = true });
        var result = decoder.Run(ids, Ones(2, 7), Positions(2, 0, 7), null, null, "router_logits.0", "router_logits.1");
        for (int layer = 0; layer < 2; layer++)
        {
            var logits = result.Extra[$"router_logits.{layer}"];                    // [B*S, experts]
            for (int token = 0; token < 14; token++)
            {
                var row = logits.AsSpan(token * experts, experts).ToArray();
                var ours = Enumerable.Range(0, experts).OrderByDescending(e => row[e]).ThenBy(e => e).Take(k).ToArray();
                Assert.That(ours, Is.EqualTo(reference.ChosenExperts[layer][token]), $"layer {layer}, token {token}");
                Assert.That(MaxAbsDifference(row, reference.RouterLogits[layer][token].Select(v => (float)v).ToArray()), Is.LessThan(1e-4f));
            }
        }
    }

    /// <summary>
    /// LayerNorm with gamma 0 and beta e_0 makes every token's MoE input the same vector, so the
    /// router weights alone decide the experts: column 0 of the router puts experts 0 and 1 on top.
    /// Every other expert gets NaN weights: if any of their output leaked into the sum (even times
    /// a zero weight), the logits would be NaN.
    /// </summary>
    [TestCase(Lowering.Portable, 1)]
    [TestCase(Lowering.Portable, 2)]
    [TestCase(Lowering.Ort, 2)]
    public void Experts_that_the_router_did_not_choose_do_not_leak(Lowering lowering, int k)
    {
        var config = TestConfigs.Base with { ModelType = "mixtral", Norm = NormKind.LayerNorm, NumExperts = 8, ExpertsPerToken = k, NormTopKProb = true };
        var weights = TestConfigs.Weights(config);
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            var gamma = weights.Values($"model.layers.{layer}.post_attention_layernorm.weight");
            var beta = weights.Values($"model.layers.{layer}.post_attention_layernorm.bias");
            Array.Clear(gamma);
            Array.Clear(beta);
            beta[0] = 1;
            var router = weights.Values($"model.layers.{layer}.block_sparse_moe.gate.weight");  // [experts, hidden]
            for (int e = 0; e < config.NumExperts; e++) router[e * config.HiddenSize] = e switch { 0 => 4f, 1 => 3.5f, _ => -4f };
            for (int e = k; e < config.NumExperts; e++)
                foreach (var part in new[] { "w1", "w2", "w3" })
                    Array.Fill(weights.Values($"model.layers.{layer}.block_sparse_moe.experts.{e}.{part}.weight"), float.NaN);
        }
        var ids = Tokens(1, 6, config.VocabSize, seed: 2);
        var reference = new ReferenceDecoder(config, weights);
        var expected = reference.Forward(ids, Ones(1, 6), Positions(1, 0, 6));
        Assert.That(reference.ChosenExperts.SelectMany(l => l).All(chosen => chosen.SequenceEqual(Enumerable.Range(0, k))), "the router forces experts 0..k-1");

        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        var actual = decoder.Run(ids, Ones(1, 6), Positions(1, 0, 6)).Logits;
        Assert.That(actual.All(float.IsFinite), "no NaN from an unchosen expert");
        Assert.That(MaxAbsDifference(actual, expected), Is.LessThan(1e-4f));
    }
}
