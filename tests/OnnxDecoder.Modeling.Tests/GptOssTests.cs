using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>GPT-OSS's attention sinks, clamped SwiGLU experts and biased router, against the Hugging Face reference.</summary>
public class GptOssTests
{
    private static float[] Expected(InMemoryWeights weights, long[,] ids, bool clamp = true) =>
        new HfReference(HfTestConfigs.GptOss, weights) { ClampSwiglu = clamp }.ForwardFloat(ids, Ones(1, ids.GetLength(1)), Positions(1, 0, ids.GetLength(1)));

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Large_sinks_take_their_share_of_every_softmax(Lowering lowering)
    {
        var config = DecoderConfig.FromHuggingFace(HfTestConfigs.GptOss);
        var weights = HfWeights.Random(HfTestConfigs.GptOss, seed: 21);
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            string name = $"model.layers.{layer}.self_attn.sinks";
            weights.Add(name, weights.Values(name).Select(v => v * 3).ToArray(), weights.Shape(name)); // sinks in +-6
        }
        var ids = Tokens(1, 14, config.VocabSize, seed: 2);
        var expected = Expected(weights, ids);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, 14), Positions(1, 0, 14)).Logits, expected), Is.LessThan(1e-4f));

        var noSinks = new InMemoryWeights();
        foreach (var spec in HfWeights.Expected(HfTestConfigs.GptOss))
            noSinks.Add(spec.Name, spec.Name.EndsWith(".sinks", StringComparison.Ordinal) ? [.. Enumerable.Repeat(-80f, (int)spec.Shape[0])] : weights.Values(spec.Name), spec.Shape);
        Assert.That(MaxAbsDifference(Expected(noSinks, ids), expected), Is.GreaterThan(1e-2f), "the check is sensitive: the sinks move these logits");
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void The_SwiGLU_clamps_bite_and_match_the_reference(Lowering lowering)
    {
        // Expert matrices 8x larger than usual put many gate and up values beyond +-7.
        var config = DecoderConfig.FromHuggingFace(HfTestConfigs.GptOss);
        var weights = HfWeights.Random(HfTestConfigs.GptOss, seed: 22);
        foreach (var name in weights.Names.Where(n => n.EndsWith("experts.gate_up_proj", StringComparison.Ordinal)).ToList())
            weights.Add(name, weights.Values(name).Select(v => v * 8).ToArray(), weights.Shape(name));
        var ids = Tokens(1, 10, config.VocabSize, seed: 4);
        var expected = Expected(weights, ids);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        float scale = expected.Max(Math.Abs);
        Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, 10), Positions(1, 0, 10)).Logits, expected), Is.LessThan(1e-5f * scale + 1e-4f), $"logits scale {scale}");
        Assert.That(MaxAbsDifference(Expected(weights, ids, clamp: false), expected), Is.GreaterThan(1e-2f * scale), "the check is sensitive: the clamps move these logits");
    }

    [Test]
    public void The_ort_graph_uses_GroupQueryAttention_sinks_and_one_MoE_op_per_layer()
    {
        var config = DecoderConfig.FromHuggingFace(HfTestConfigs.GptOss);
        var weights = HfWeights.Random(HfTestConfigs.GptOss, seed: 2);
        var ort = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Ort }).ToModelProto();
        var attention = ort.Graph.Node.Where(n => n.OpType == "GroupQueryAttention").ToList();
        Assert.That(attention, Has.Count.EqualTo(3));
        Assert.That(attention.Select(n => n.Input[11]), Is.EqualTo(new[] { 0, 1, 2 }.Select(i => $"model.layers.{i}.self_attn.sinks")), "head_sink input");
        Assert.That(attention.Select(n => n.Attribute.Any(a => a.Name == "local_window_size")), Is.EqualTo(new[] { true, false, true }), "layer_types");
        Assert.That(ort.Graph.Node.Count(n => n.OpType == "MoE"), Is.EqualTo(3));
        var portable = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Portable }).ToModelProto();
        Assert.That(portable.Graph.Node.Any(n => n.Domain == "com.microsoft"), Is.False, "standard ops only");
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Router_logits_with_bias_pick_the_experts_the_reference_picks(Lowering lowering)
    {
        var config = DecoderConfig.FromHuggingFace(HfTestConfigs.GptOss);
        var weights = HfWeights.Random(HfTestConfigs.GptOss, seed: 23);
        var ids = Tokens(1, 9, config.VocabSize, seed: 6);
        var reference = new HfReference(HfTestConfigs.GptOss, weights);
        reference.Forward(ids, Ones(1, 9), Positions(1, 0, 9));
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, RouterLogitsOutputs = true });
        var result = decoder.Run(ids, Ones(1, 9), Positions(1, 0, 9), null, null, "router_logits.0", "router_logits.1", "router_logits.2");
        for (int layer = 0; layer < 3; layer++)
        {
            var logits = result.Extra[$"router_logits.{layer}"];                                       // [S, experts]
            for (int token = 0; token < 9; token++)
            {
                var row = logits.AsSpan(token * config.NumExperts, config.NumExperts).ToArray();
                var ours = Enumerable.Range(0, config.NumExperts).OrderByDescending(e => row[e]).ThenBy(e => e).Take(config.ExpertsPerToken).ToArray();
                Assert.That(ours, Is.EqualTo(reference.ChosenExperts[layer]![token]), $"layer {layer}, token {token}");
            }
        }
    }

    [TestCase("swiglu_limit", "5.0", "swiglu_limit (5) is not supported: GptOssExperts clamps at 7")]
    [TestCase("quantization_config", """{"quant_method": "bitsandbytes", "load_in_4bit": true}""",
        "quantization_config (quant_method bitsandbytes) is not supported for gpt_oss: only mxfp4 experts are read; export a checkpoint whose weights are not quantized (bfloat16 or float32, no quantization_config)")]
    public void Unsupported_fields_are_refused_naming_the_field(string field, string value, string problem)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(HfTestConfigs.GptOss)!.AsObject();
        node[field] = System.Text.Json.Nodes.JsonNode.Parse(value);
        var error = Assert.Throws<ConfigException>(() => DecoderConfig.FromHuggingFace(node.ToJsonString()))!;
        Assert.That(error.Message, Is.EqualTo("config.json: " + problem));
    }
}
