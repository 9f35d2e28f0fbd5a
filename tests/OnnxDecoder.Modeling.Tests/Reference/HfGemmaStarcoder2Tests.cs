using static OnnxDecoder.Modeling.Tests.Reference.HfReferenceTests;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>The reference's readings of Gemma 1 (GemmaConfig, modeling_gemma) and StarCoder2 (Starcoder2Config,
/// modeling_starcoder2): each invariant below fails on a different reading of transformers.</summary>
public class HfGemmaStarcoder2Tests
{
    private static double MaxDifference(double[] a, double[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    private static double[] Run(string json, InMemoryWeights weights)
    {
        var spec = HfSpec.Parse(json);
        var (ids, mask, positions) = Batch(12, spec.VocabSize, seed: 1, 0);
        return new HfReference(spec, weights).Forward(ids, mask, positions);
    }

    [Test]
    public void Gemma_reads_GemmaConfigs_defaults_and_has_two_norms_per_layer()
    {
        var bare = HfSpec.Parse("""{"model_type": "gemma", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 16, "vocab_size": 64}""");
        Assert.That((bare.HeadDim, bare.NumKvHeads, bare.MaxPositions, bare.RmsNormEps, bare.AttentionScale, bare.TieWordEmbeddings, bare.Activation),
            Is.EqualTo((256, 16, 8192, 1e-6, 1 / 16.0, true, "gelu_pytorch_tanh")));
        Assert.That((bare.GemmaStyle, bare.SandwichNorms, bare.AttentionSoftcap, bare.FinalLogitSoftcap, bare.QkvBias, bare.OutputBias),
            Is.EqualTo((true, false, (double?)null, (double?)null, false, false)));
        Assert.That(bare.LayerWindows, Is.EqualTo(new int?[] { null, null }), "no sliding window");
        var names = HfWeights.Expected(HfTestConfigs.Gemma).Select(s => s.Name).ToList();
        Assert.That(names.Where(n => n.StartsWith("model.layers.0.", StringComparison.Ordinal) && n.Contains("norm", StringComparison.Ordinal)),
            Is.EqualTo(new[] { "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight" }));
        Assert.That(HfSpec.Parse(HfTestConfigs.GemmaLegacyActivation) is { QkvBias: true, OutputBias: true, HeadDim: 16 }, "attention_bias on q/k/v/o");
    }

    [Test]
    public void Gemma_ignores_the_legacy_hidden_act_and_reads_hidden_activation()
    {
        string json = HfTestConfigs.GemmaLegacyActivation;
        Assert.That(HfSpec.Parse(json).Activation, Is.EqualTo("gelu_pytorch_tanh"), "hidden_act gelu alone is ignored");
        var weights = HfWeights.Random(HfSpec.Parse(json), seed: 3);
        var logits = Run(json, weights);
        Assert.That(MaxDifference(logits, Run(HfTestConfigs.With(json, ("hidden_act", "silu")), weights)), Is.EqualTo(0));
        Assert.That(MaxDifference(logits, Run(HfTestConfigs.With(json, ("hidden_activation", "gelu")), weights)), Is.GreaterThan(1e-6),
            "hidden_activation picks the activation (exact against tanh GELU)");
    }

    [Test]
    public void Starcoder2_reads_Starcoder2Configs_defaults_and_its_window_on_every_layer()
    {
        var bare = HfSpec.Parse("""{"model_type": "starcoder2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 64}""");
        Assert.That((bare.HeadDim, bare.NumKvHeads, bare.MaxPositions, bare.RmsNormEps, bare.Rope.Theta, bare.TieWordEmbeddings, bare.Activation),
            Is.EqualTo((8, 2, 4096, 1e-5, 10000.0, true, "gelu_pytorch_tanh")));
        Assert.That((bare.QkvBias, bare.OutputBias, bare.MlpBias, bare.Starcoder2Style, bare.GemmaStyle), Is.EqualTo((true, true, true, true, false)));
        Assert.That(bare.LayerWindows, Is.EqualTo(new int?[] { null, null }), "sliding_window defaults to null");
        Assert.That(HfSpec.Parse(HfTestConfigs.Starcoder2).LayerWindows, Is.EqualTo(new int?[] { 4, 4, 4 }));
    }

    [Test]
    public void Starcoder2_without_use_bias_keeps_only_the_layernorm_biases()
    {
        var biases = HfWeights.Expected(HfTestConfigs.Starcoder2NoBias).Select(s => s.Name).Where(n => n.EndsWith(".bias", StringComparison.Ordinal));
        Assert.That(biases.Where(n => !n.EndsWith("layernorm.bias", StringComparison.Ordinal) && n != "model.norm.bias"), Is.Empty);
        Assert.That(biases.Count(), Is.EqualTo(2 * 2 + 1));
        Assert.That(HfWeights.Expected(HfTestConfigs.Starcoder2).Select(s => s.Name),
            Does.Contain("model.layers.2.mlp.c_fc.bias").And.Contain("model.layers.2.self_attn.o_proj.bias"));
    }

    [Test]
    public void Starcoder2_norms_subtract_the_mean()
    {
        // Every norm is a LayerNorm, so adding one constant to every embedding value leaves an untied model's logits
        // unchanged (the residual stream moves by a constant vector each norm removes); an RMSNorm reading would not.
        string json = HfTestConfigs.Starcoder2NoBias;
        var weights = HfWeights.Random(HfSpec.Parse(json), seed: 5);
        const string table = "model.embed_tokens.weight";
        // Multiples of 2^-10, so that the shifted table holds the exact sums.
        var original = weights.Values(table).Select(v => MathF.Round(v * 1024) / 1024).ToArray();
        weights.Add(table, original, weights.Shape(table));
        var logits = Run(json, weights);
        weights.Add(table, original.Select(v => v + 0.75f).ToArray(), weights.Shape(table));
        Assert.That(MaxDifference(logits, Run(json, weights)), Is.LessThan(1e-9));
        weights.Add(table, original, weights.Shape(table));
        const string bias = "model.layers.0.input_layernorm.bias";
        weights.Add(bias, weights.Values(bias).Select(v => v + 0.5f).ToArray(), weights.Shape(bias));
        Assert.That(MaxDifference(logits, Run(json, weights)), Is.GreaterThan(1e-4), "the norm bias is read");
    }
}
