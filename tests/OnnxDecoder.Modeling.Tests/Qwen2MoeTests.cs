using System.Text.Json.Nodes;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// Qwen2-MoE against the Hugging Face reference beyond the shared family table (NewFamilyTests): Qwen2MoeConfig's
/// defaults, the layer choice (mlp_only_layers, decoder_sparse_step), qkv_bias, and that the shared expert with its
/// sigmoid gate is part of what both sides compute.
/// </summary>
public class Qwen2MoeTests
{
    private static string Without(string json, params string[] fields)
    {
        var root = JsonNode.Parse(json)!.AsObject();
        foreach (var field in fields) root.Remove(field);
        return root.ToJsonString();
    }

    [Test]
    public void Absent_fields_take_Qwen2MoeConfigs_defaults_as_the_reference_reads_them()
    {
        // 16 heads, so that the default 16 key/value heads divide them.
        string json = Without(HfTestConfigs.With(HfTestConfigs.Qwen2Moe, ("num_attention_heads", 16), ("hidden_size", 64)), "num_experts", "num_experts_per_tok", "moe_intermediate_size",
            "shared_expert_intermediate_size", "intermediate_size", "num_key_value_heads", "mlp_only_layers", "decoder_sparse_step");
        var c = DecoderConfig.FromHuggingFace(json);
        Assert.That((c.NumExperts, c.ExpertsPerToken, c.IntermediateSize, c.SharedExpertIntermediateSize, c.DenseIntermediateSize, c.NumKvHeads),
            Is.EqualTo((60, 4, 1408, 5632, 5632, 16)));
        Assert.That((c.NormTopKProb, c.AttentionBias), Is.EqualTo((false, true)));
        var moe = HfSpec.Parse(json).Moe!;
        Assert.That((moe.NumExperts, moe.TopK, moe.MoeIntermediateSize, moe.SharedExpertIntermediateSize, moe.NormTopKProb),
            Is.EqualTo((c.NumExperts, c.ExpertsPerToken, c.IntermediateSize, c.SharedExpertIntermediateSize, c.NormTopKProb)));
        Assert.That(c.ExpertLayers, Is.EqualTo(moe.SparseLayers).And.All.True);
    }

    [TestCase("[1]", 1, new[] { true, false, true })]
    [TestCase("[]", 2, new[] { false, true, false })]
    [TestCase("[0, 2]", 1, new[] { false, true, false })]
    public void The_sparse_layers_follow_mlp_only_layers_and_decoder_sparse_step(string mlpOnly, int step, bool[] expected)
    {
        string json = HfTestConfigs.With(HfTestConfigs.Qwen2Moe, ("mlp_only_layers", JsonNode.Parse(mlpOnly)), ("decoder_sparse_step", step));
        var config = DecoderConfig.FromHuggingFace(json);
        Assert.That(config.ExpertLayers, Is.EqualTo(expected));
        Assert.That(HfSpec.Parse(json).Moe!.SparseLayers, Is.EqualTo(expected), "the reference's reading of Qwen2MoeDecoderLayer's rule");
        var weights = HfWeights.Random(json, seed: 4);
        var ort = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Ort }).ToModelProto();
        Assert.That(ort.Graph.Node.Count(n => n.OpType == "MoE" && n.Domain == "com.microsoft"), Is.EqualTo(expected.Count(e => e)));
    }

    [Test]
    public void Qkv_bias_false_drops_the_q_k_v_biases_on_both_sides()
    {
        string json = HfTestConfigs.With(HfTestConfigs.Qwen2Moe, ("qkv_bias", false));
        var config = DecoderConfig.FromHuggingFace(json);
        var ours = FamilyRegistry.For(config).ExpectedWeights(config).Select(s => s.Name).Order();
        Assert.That(ours, Is.EqualTo(HfWeights.Expected(json).Select(s => s.Name).Order()));
        Assert.That(ours.Any(n => n.EndsWith("_proj.bias", StringComparison.Ordinal)), Is.False);
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void The_shared_expert_and_its_gate_change_the_logits_and_the_export_follows(Lowering lowering)
    {
        string json = HfTestConfigs.Qwen2Moe;
        var config = DecoderConfig.FromHuggingFace(json);
        var ids = Tokens(1, 9, config.VocabSize, seed: 6);
        var weights = HfWeights.Random(json, seed: 9);
        var withShared = new HfReference(json, weights).ForwardFloat(ids, Ones(1, 9), Positions(1, 0, 9));

        // Zero the shared expert's gate: sigmoid(0) = 1/2 halves its share of every token's output.
        foreach (string name in weights.Names.Where(n => n.EndsWith(".shared_expert_gate.weight", StringComparison.Ordinal)).ToList())
        {
            var values = weights.Values(name);
            for (int i = 0; i < values.Length; i++) values[i] = 0;
        }
        var halfShared = new HfReference(json, weights).ForwardFloat(ids, Ones(1, 9), Positions(1, 0, 9));
        Assert.That(MaxAbsDifference(withShared, halfShared), Is.GreaterThan(1e-3f), "a zero gate weight halves the shared expert (sigmoid 0 = 1/2)");

        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        var logits = decoder.Run(ids, Ones(1, 9), Positions(1, 0, 9)).Logits;
        Assert.That(MaxAbsDifference(logits, halfShared), Is.LessThan(1e-4f), "the export with the changed gate matches the reference");
    }
}
