using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>How the gemma and starcoder2 families read config.json (GemmaConfig's and Starcoder2Config's fields and
/// defaults), and the one-line errors for what they refuse.</summary>
public class GemmaStarcoder2ConfigTests
{
    [Test]
    public void Gemma_binds_its_fields()
    {
        var c = DecoderConfig.FromHuggingFace(HfTestConfigs.Gemma);
        Assert.That(FamilyRegistry.For(c).Name, Is.EqualTo("gemma"));
        Assert.That((c.HeadDim, c.NumKvHeads, c.HiddenAct, c.NormScalePlusOne, c.TieWordEmbeddings, c.AttentionBias, c.GatedMlp, c.Norm),
            Is.EqualTo((16, 1, Activation.GeluTanh, true, true, false, true, NormKind.RmsNorm)));
        Assert.That((c.SlidingWindow, c.AttentionScale, c.AttentionSoftcap, c.FinalLogitSoftcap), Is.EqualTo(((int?)null, (double?)null, (double?)null, (double?)null)));
        Assert.That((c.BosTokenId, c.EosTokenIds), Is.EqualTo((2, new[] { 1 })));
    }

    [Test]
    public void Gemma_takes_GemmaConfigs_defaults_and_ignores_the_legacy_hidden_act()
    {
        var legacy = DecoderConfig.FromHuggingFace(HfTestConfigs.GemmaLegacyActivation);
        Assert.That((legacy.HiddenAct, legacy.AttentionBias, legacy.TieWordEmbeddings), Is.EqualTo((Activation.GeluTanh, true, false)));
        Assert.That(FamilyRegistry.For(legacy).ExpectedWeights(legacy).Select(s => s.Name), Does.Contain("model.layers.1.self_attn.o_proj.bias"));
        var bare = DecoderConfig.FromHuggingFace("""{"model_type": "gemma", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 16}""");
        Assert.That((bare.HeadDim, bare.NumKvHeads, bare.VocabSize, bare.MaxPositions, bare.NormEps, bare.RopeTheta, bare.TieWordEmbeddings),
            Is.EqualTo((256, 16, 256000, 8192, 1e-6, 10000.0, true)));
    }

    [TestCase("hidden_activation", "\"relu2\"", "config.json: hidden_activation 'relu2' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh)")]
    [TestCase("use_bidirectional_attention", "true", "config.json: use_bidirectional_attention (true) is not supported: a decoder export attends causally")]
    [TestCase("num_key_value_heads", "<remove>", "config.json: num_key_value_heads (16) must divide num_attention_heads (4)")]
    [TestCase("head_dim", "0", "config.json: head_dim (0) must be positive")]
    public void Gemma_config_errors_name_the_field(string field, string value, string message)
    {
        var error = Assert.Throws<ConfigException>(() => DecoderConfig.FromHuggingFace(With(HfTestConfigs.Gemma, field, value)))!;
        Assert.That(error.Message, Is.EqualTo(message));
    }

    [Test]
    public void Starcoder2_binds_its_fields()
    {
        var c = DecoderConfig.FromHuggingFace(HfTestConfigs.Starcoder2);
        Assert.That(FamilyRegistry.For(c).Name, Is.EqualTo("starcoder2"));
        Assert.That((c.Norm, c.NormEps, c.GatedMlp, c.HiddenAct, c.AttentionBias, c.ProjectionBias, c.HeadDim, c.NumKvHeads),
            Is.EqualTo((NormKind.LayerNorm, 1e-5, false, Activation.GeluTanh, true, true, 8, 2)));
        Assert.That((c.SlidingWindow, c.SlidingLayers, c.TieWordEmbeddings, c.RopeTheta), Is.EqualTo(((int?)4, (IReadOnlyList<bool>?)null, true, 999999.4420358813)));
        var noBias = DecoderConfig.FromHuggingFace(HfTestConfigs.Starcoder2NoBias);
        Assert.That((noBias.AttentionBias, noBias.ProjectionBias, noBias.SlidingWindow, noBias.HiddenAct, noBias.TieWordEmbeddings),
            Is.EqualTo((false, false, (int?)null, Activation.Gelu, false)));
        var bare = DecoderConfig.FromHuggingFace("""{"model_type": "starcoder2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "bos_token_id": 0, "eos_token_id": 0}""");
        Assert.That((bare.NumKvHeads, bare.VocabSize, bare.MaxPositions, bare.NormEps, bare.AttentionBias, bare.TieWordEmbeddings, bare.SlidingWindow),
            Is.EqualTo((2, 49152, 4096, 1e-5, true, true, (int?)null)));
    }

    [TestCase("sliding_window", "0", "config.json: sliding_window (0) must be positive when set")]
    [TestCase("use_bias", "\"yes\"", "config.json: use_bias (\"yes\") must be true or false")]
    [TestCase("norm_epsilon", "\"1e-5\"", "config.json: norm_epsilon (\"1e-5\") must be a number")]
    [TestCase("hidden_act", "\"relu2\"", "config.json: hidden_act 'relu2' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh)")]
    // Starcoder2Config's default bos/eos (50256) lie outside a 64-token vocabulary: the released configs give 0.
    [TestCase("bos_token_id", "<remove>", "config.json: bos_token_id (50256) must be a token id below vocab_size (64)")]
    public void Starcoder2_config_errors_name_the_field(string field, string value, string message)
    {
        var error = Assert.Throws<ConfigException>(() => DecoderConfig.FromHuggingFace(With(HfTestConfigs.Starcoder2, field, value)))!;
        Assert.That(error.Message, Is.EqualTo(message));
    }

    private static string With(string json, string field, string value)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        if (value == "<remove>") node.Remove(field);
        else node[field] = System.Text.Json.Nodes.JsonNode.Parse(value);
        return node.ToJsonString();
    }
}
