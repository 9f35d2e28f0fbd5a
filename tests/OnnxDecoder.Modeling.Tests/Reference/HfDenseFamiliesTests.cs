using OnnxDecoder.Modeling;
using static OnnxDecoder.Modeling.Tests.Reference.HfReferenceTests;

namespace OnnxDecoder.Modeling.Tests.Reference;

/// <summary>The reference's readings of Gemma 3, Granite, OLMo 2 and SmolLM3 (<see cref="HfDenseFamilies"/>): each
/// invariant below fails on a different reading of transformers.</summary>
public class HfDenseFamiliesTests
{
    private static double MaxDifference(double[] a, double[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    private static double[] Run(string json, InMemoryWeights weights, int length = 12, int seed = 1)
    {
        var spec = HfSpec.Parse(json);
        var (ids, mask, positions) = Batch(length, spec.VocabSize, seed, 0);
        return new HfReference(spec, weights).Forward(ids, mask, positions);
    }

    [Test]
    public void Gemma3_reads_its_defaults_layer_types_and_rotaries()
    {
        var spec = HfSpec.Parse(HfTestConfigs.Gemma3Text);
        Assert.That(spec.LayerWindows, Is.EqualTo(new int?[] { 4, 4, 4, 4, 4, null, 4 }), "a global layer every sliding_window_pattern-th");
        Assert.That((spec.Rope.Type, spec.Rope.Theta, spec.Rope.Factor), Is.EqualTo(("linear", 1e6, 8.0)));
        Assert.That((spec.LocalRope!.Type, spec.LocalRope.Theta), Is.EqualTo(("default", 10000.0)));
        Assert.That((spec.AttentionSoftcap, spec.FinalLogitSoftcap, spec.GemmaStyle, spec.QkNorm), Is.EqualTo(((double?)null, (double?)null, true, true)));
        var bare = HfSpec.Parse("""{"model_type": "gemma3_text", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 12, "num_attention_heads": 4, "vocab_size": 64}""");
        Assert.That((bare.HeadDim, bare.NumKvHeads, bare.Rope.Theta, bare.LocalRope!.Theta, bare.AttentionScale, bare.TieWordEmbeddings),
            Is.EqualTo((256, 4, 1e6, 10000.0, 1 / 16.0, true)));
        Assert.That(bare.LayerWindows.Select((w, i) => w is null ? i : -1).Where(i => i >= 0), Is.EqualTo(new[] { 5, 11 }));
        Assert.That(bare.LayerWindows[0], Is.EqualTo(4096));
    }

    [Test]
    public void Gemma3_never_applies_attn_logit_softcapping_but_caps_the_logits_with_final_logit_softcapping()
    {
        string json = HfTestConfigs.Gemma3TextLayerTypes;
        var weights = HfWeights.Random(HfSpec.Parse(json), seed: 3);
        var capped = Run(json, weights);
        Assert.That(MaxDifference(capped, Run(HfTestConfigs.With(json, ("attn_logit_softcapping", 0.01)), weights)), Is.EqualTo(0));
        Assert.That(capped.Max(Math.Abs), Is.LessThanOrEqualTo(2.0));
        Assert.That(MaxDifference(capped, Run(HfTestConfigs.With(json, ("final_logit_softcapping", null)), weights)), Is.GreaterThan(1e-3));
    }

    [Test]
    public void Gemma3_sliding_layers_rotate_with_the_local_base_and_global_layers_with_the_scaled_one()
    {
        string json = HfTestConfigs.Gemma3TextLayerTypes;
        var weights = HfWeights.Random(HfSpec.Parse(json), seed: 5);
        var logits = Run(json, weights);
        Assert.That(MaxDifference(logits, Run(HfTestConfigs.With(json, ("rope_local_base_freq", 1000.0)), weights)), Is.GreaterThan(1e-4), "the local base matters");
        Assert.That(MaxDifference(logits, Run(HfTestConfigs.With(json, ("rope_scaling", null)), weights)), Is.GreaterThan(1e-4), "rope_scaling matters");
        // All layers global: the local base no longer matters.
        string allGlobal = HfTestConfigs.With(json, ("layer_types", new System.Text.Json.Nodes.JsonArray("full_attention", "full_attention", "full_attention")));
        Assert.That(MaxDifference(Run(allGlobal, weights), Run(HfTestConfigs.With(allGlobal, ("rope_local_base_freq", 1000.0)), weights)), Is.EqualTo(0));
    }

    [Test]
    public void Granite_divides_the_logits_by_logits_scaling()
    {
        string json = HfTestConfigs.Granite;
        var weights = HfWeights.Random(HfSpec.Parse(json), seed: 7);
        var scaled = Run(json, weights);
        var unscaled = Run(HfTestConfigs.With(json, ("logits_scaling", 1.0)), weights);
        Assert.That(MaxDifference(scaled.Select(v => v * 8).ToArray(), unscaled), Is.LessThan(1e-9));
        Assert.That(MaxDifference(scaled, Run(HfTestConfigs.With(json, ("residual_multiplier", 1.0)), weights)), Is.GreaterThan(1e-3));
        Assert.That(HfSpec.Parse(HfTestConfigs.With(json, ("attention_multiplier", null))).AttentionScale, Is.EqualTo(1.0), "GraniteConfig's default");
    }

    [Test]
    public void Olmo2_norms_q_over_the_whole_projection_not_per_head()
    {
        // Scaling all of q_proj leaves the logits unchanged (a norm over q); scaling one head's rows changes them,
        // which a per-head norm (Qwen3's) would hide.
        string json = HfTestConfigs.With(HfTestConfigs.Olmo2, ("rms_norm_eps", 1e-15));
        var spec = HfSpec.Parse(json);
        var weights = HfWeights.Random(spec, seed: 9);
        var logits = Run(json, weights);
        const string q = "model.layers.0.self_attn.q_proj.weight";
        var original = weights.Values(q);
        weights.Add(q, original.Select(v => v * 4).ToArray(), weights.Shape(q));
        Assert.That(MaxDifference(logits, Run(json, weights)), Is.LessThan(1e-9));
        int headRows = spec.HeadDim * spec.HiddenSize;
        weights.Add(q, original.Select((v, i) => i < headRows ? v * 4 : v).ToArray(), weights.Shape(q));
        Assert.That(MaxDifference(logits, Run(json, weights)), Is.GreaterThan(1e-4));
    }

    [Test]
    public void SmolLM3_no_rope_layers_one_means_rotary_and_the_default_leaves_every_fourth_layer_without()
    {
        Assert.That(HfSpec.Parse(HfTestConfigs.SmolLM3).LayerRotates, Is.EqualTo(new[] { true, true, true, false }));
        var sliding = HfSpec.Parse(HfTestConfigs.SmolLM3SlidingWindow);
        Assert.That(sliding.LayerRotates, Is.EqualTo(new[] { true, true, true, false }));
        Assert.That(sliding.LayerWindows, Is.EqualTo(new int?[] { null, null, null, 4 }), "SmolLM3Config slides the NoPE layers");

        // A one-layer NoPE model cannot see positions: spreading the position ids apart leaves its logits unchanged
        // (rotary sees relative positions, so a uniform shift would not tell the two apart).
        string nope = HfTestConfigs.With(HfTestConfigs.SmolLM3, ("num_hidden_layers", 1), ("no_rope_layers", new System.Text.Json.Nodes.JsonArray(0)));
        string rope = HfTestConfigs.With(nope, ("no_rope_layers", new System.Text.Json.Nodes.JsonArray(1)));
        var weights = HfWeights.Random(HfSpec.Parse(nope), seed: 11);
        var (ids, mask, positions) = Batch(10, 64, seed: 2, 0);
        var shifted = (long[,])positions.Clone();
        for (int t = 0; t < 10; t++) shifted[0, t] = 3 * t;
        double Shift(string json) => MaxDifference(new HfReference(json, weights).Forward(ids, mask, positions), new HfReference(json, weights).Forward(ids, mask, shifted));
        Assert.That(Shift(nope), Is.EqualTo(0));
        Assert.That(Shift(rope), Is.GreaterThan(1e-4));
    }
}
