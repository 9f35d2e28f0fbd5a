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

    [TestCase(4, 0)]
    [TestCase(8, 4)]
    [TestCase(4, 4)]
    public void Quantized_ort_exports_carry_the_experts_in_QMoE_blocks(int bits, int level)
    {
        // intermediate_size 32: both expert input widths (hidden 32, intermediate 32) are whole blocks of 32.
        string json = HfTestConfigs.With(HfTestConfigs.GptOss, ("intermediate_size", 32));
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 24);
        var q = new Quantization.QuantizationOptions { Bits = bits, BlockSize = 32, AccuracyLevel = level };
        var options = new ExportOptions { Lowering = Lowering.Ort, Quantization = q };
        var graph = FamilyRegistry.For(config).Build(config, weights, options).ToModelProto();
        var qmoe = graph.Graph.Node.Where(n => n.OpType == "QMoE").ToList();
        Assert.That(qmoe, Has.Count.EqualTo(3), "one QMoE op per layer");
        Assert.That(qmoe.Select(n => n.Attribute.Single(a => a.Name == "expert_weight_bits").I), Is.All.EqualTo(bits));
        Assert.That(qmoe.Select(n => n.Attribute.SingleOrDefault(a => a.Name == "accuracy_level")?.I), Is.All.EqualTo(bits == 8 ? 4 : null),
            "4-bit experts compute in fp32; 8-bit ones take level 4");
        Assert.That(graph.Graph.Node.Any(n => n.OpType == "MoE"), Is.False);
        Assert.That(graph.Graph.Initializer.Single(t => t.Name == "model.layers.0.mlp.experts.gate_up_proj.fc1.quantized").Dims, Is.EqualTo(new long[] { 4, 64, 32 * bits / 8 }));

        var ids = Tokens(1, 10, config.VocabSize, seed: 7);
        var dequantized = QuantizationTests.DequantizedCopy(config, weights, q, portable: false);
        var expected = new HfReference(json, dequantized).ForwardFloat(ids, Ones(1, 10), Positions(1, 0, 10));
        using var decoder = new OrtDecoder(config, weights, options);
        var logits = decoder.Run(ids, Ones(1, 10), Positions(1, 0, 10)).Logits;
        float scale = expected.Max(Math.Abs);
        if (level == 0)
        {
            Assert.That(MaxAbsDifference(logits, expected), Is.LessThan(1e-4f), "fp32 compute: exact against the dequantized weights");
            var floatExperts = new InMemoryWeights();
            foreach (var name in dequantized.Names)
                floatExperts.Add(name, name.Contains(".experts.", StringComparison.Ordinal) ? weights.Values(name) : dequantized.Values(name), dequantized.Shape(name));
            Assert.That(MaxAbsDifference(new HfReference(json, floatExperts).ForwardFloat(ids, Ones(1, 10), Positions(1, 0, 10)), expected), Is.GreaterThan(1e-4f),
                "the check is sensitive: quantizing the experts moves these logits");
        }
        else
            Assert.That(MaxAbsDifference(logits, expected), Is.LessThan(0.05f * scale), $"int8 activations (accuracy level 4) stay close; logits scale {scale}");
    }

    [Test]
    public void Int8_experts_at_accuracy_level_0_stay_float_since_QMoE_would_quantize_the_activations()
    {
        string json = HfTestConfigs.With(HfTestConfigs.GptOss, ("intermediate_size", 32));
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 25);
        var q = new Quantization.QuantizationOptions { Bits = 8, BlockSize = 32 };
        var options = new ExportOptions { Lowering = Lowering.Ort, Quantization = q };
        var graph = FamilyRegistry.For(config).Build(config, weights, options).ToModelProto();
        Assert.That(graph.Graph.Node.Any(n => n.OpType is "QMoE" or "MoE"), Is.False, "experts spelled out in standard ops");
        var ids = Tokens(1, 10, config.VocabSize, seed: 8);
        var expected = new HfReference(json, QuantizationTests.DequantizedCopy(config, weights, q, portable: false)).ForwardFloat(ids, Ones(1, 10), Positions(1, 0, 10));
        using var decoder = new OrtDecoder(config, weights, options);
        Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, 10), Positions(1, 0, 10)).Logits, expected), Is.LessThan(1e-4f));
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
