using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>Qwen3-MoE's layer choice (decoder_sparse_step, mlp_only_layers) and routing, against the Hugging Face reference.</summary>
public class Qwen3MoeTests
{
    [TestCase(nameof(HfTestConfigs.Qwen3Moe), 3)]
    [TestCase(nameof(HfTestConfigs.Qwen3MoeDenseLayers), 1)]
    public void The_ort_graph_fuses_each_sparse_layer_into_one_MoE_op_and_the_portable_graph_none(string name, int sparseLayers)
    {
        string json = name == nameof(HfTestConfigs.Qwen3Moe) ? HfTestConfigs.Qwen3Moe : HfTestConfigs.Qwen3MoeDenseLayers;
        var config = DecoderConfig.FromHuggingFace(json);
        Assert.That(HfSpec.Parse(json).Moe!.SparseLayers.Count(s => s), Is.EqualTo(sparseLayers), "the reference's reading of the layer rule");
        var weights = HfWeights.Random(json, seed: 2);
        var ort = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Ort }).ToModelProto();
        Assert.That(ort.Graph.Node.Count(n => n.OpType == "MoE" && n.Domain == "com.microsoft"), Is.EqualTo(sparseLayers));
        var portable = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Portable }).ToModelProto();
        Assert.That(portable.Graph.Node.Any(n => n.Domain == "com.microsoft"), Is.False, "standard ops only");
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Router_logits_pick_the_experts_the_reference_picks(Lowering lowering)
    {
        // Only layer 1 routes in this config: its router logits are the graph's router_logits.0.
        string json = HfTestConfigs.Qwen3MoeDenseLayers;
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 12);
        var ids = Tokens(1, 9, config.VocabSize, seed: 3);
        var reference = new HfReference(json, weights);
        reference.Forward(ids, Ones(1, 9), Positions(1, 0, 9));
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, RouterLogitsOutputs = true });
        var logits = decoder.Run(ids, Ones(1, 9), Positions(1, 0, 9), null, null, "router_logits.0").Extra["router_logits.0"]; // [S, experts]
        Assert.That(reference.ChosenExperts[0], Is.Null, "layer 0 is dense");
        var chosen = reference.ChosenExperts[1]!;
        for (int token = 0; token < 9; token++)
        {
            var row = logits.AsSpan(token * config.NumExperts, config.NumExperts).ToArray();
            var ours = Enumerable.Range(0, config.NumExperts).OrderByDescending(e => row[e]).ThenBy(e => e).Take(config.ExpertsPerToken).ToArray();
            Assert.That(ours, Is.EqualTo(chosen[token]), $"token {token}");
        }
    }

    [TestCase("mlp_only_layers", "[4]", "mlp_only_layers entries must be layer indices below num_hidden_layers (4)")]
    [TestCase("decoder_sparse_step", "0", "decoder_sparse_step (0) must be at least 1")]
    public void A_bad_layer_choice_names_the_field(string field, string value, string problem)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(HfTestConfigs.Qwen3MoeDenseLayers)!.AsObject();
        node[field] = System.Text.Json.Nodes.JsonNode.Parse(value);
        var error = Assert.Throws<ConfigException>(() => DecoderConfig.FromHuggingFace(node.ToJsonString()))!;
        Assert.That(error.Message, Is.EqualTo("config.json: " + problem));
    }
}
