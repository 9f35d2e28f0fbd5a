using System.Text.Json.Nodes;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;
using static OnnxDecoder.Modeling.Tests.SlidingWindowConfigs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// Each family's sliding window as its transformers configuration_*.py / modeling_*.py reads it: whether there is one at
/// all, its default, which layers take it and whether use_sliding_window or an explicit null switch it off. (Qwen2, Qwen3
/// and their MoE variants are in <see cref="QwenSlidingWindowTests"/>, Mistral in <see cref="ConfigTests"/>.)
/// </summary>
public class FamilySlidingWindowTests
{
    /// <summary>Whether each GroupQueryAttention node of the ort export carries a local_window_size.</summary>
    private static bool[] OrtWindowAttributes(string json)
    {
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 5);
        var model = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Ort }).ToModelProto();
        return [.. model.Graph.Node.Where(n => n.OpType == "GroupQueryAttention").Select(n => n.Attribute.Any(a => a.Name == "local_window_size"))];
    }

    [TestCase("llama", HfTestConfigs.Llama, TestName = "LlamaConfig_has_no_sliding_window_so_use_sliding_window_true_with_sliding_window_16_exports_none")]
    [TestCase("granite", HfTestConfigs.Granite, TestName = "GraniteConfig_has_no_sliding_window_so_use_sliding_window_true_with_sliding_window_16_exports_none")]
    [TestCase("olmo2", HfTestConfigs.Olmo2, TestName = "Olmo2Config_has_no_sliding_window_so_use_sliding_window_true_with_sliding_window_16_exports_none")]
    [TestCase("gemma", HfTestConfigs.Gemma, TestName = "GemmaConfig_has_no_sliding_window_so_use_sliding_window_true_with_sliding_window_16_exports_none")]
    public void Families_without_a_window_in_transformers_export_none_whatever_config_json_says(string type, string baseJson)
    {
        // Converted checkpoints carry these two fields; the config classes do not declare them and the attention of these
        // families passes no window (the model builds the plain causal mask), so transformers ignores them.
        string json = HfTestConfigs.With(baseJson, ("use_sliding_window", true), ("sliding_window", 16), ("max_window_layers", 0));
        var config = DecoderConfig.FromHuggingFace(json);
        Assert.That((config.SlidingWindow, config.SlidingLayers), Is.EqualTo(((int?)null, (bool[]?)null)), type);
        Assert.That(HfSpec.Parse(json).LayerWindows, Has.All.Null, "the reference reads no window either");
        Assert.That(OrtWindowAttributes(json), Has.Length.EqualTo(config.NumLayers).And.All.False, "no GroupQueryAttention gets local_window_size");
    }

    [Test]
    public void A_llama_export_past_use_sliding_window_true_and_sliding_window_16_matches_the_full_attention_reference()
    {
        // A 24-token prompt: positions 16 on would see fewer keys under a window of 16.
        string json = HfTestConfigs.With(HfTestConfigs.Llama, ("use_sliding_window", true), ("sliding_window", 16));
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 31);
        const int length = 24;
        var ids = Tokens(1, length, config.VocabSize, seed: 37);
        var expected = new HfReference(json, weights).ForwardFloat(ids, Ones(1, length), Positions(1, 0, length));
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Portable });
        Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, length), Positions(1, 0, length)).Logits, expected), Is.LessThan(1e-4f));

        // The check is sensitive: the same weights under Mistral's rule (which does apply sliding_window 16) differ.
        string windowed = HfTestConfigs.With(json, ("model_type", "mistral"), ("architectures", new JsonArray("MistralForCausalLM")));
        var slid = new HfReference(windowed, weights).ForwardFloat(ids, Ones(1, length), Positions(1, 0, length));
        Assert.That(MaxAbsDifference(slid, expected), Is.GreaterThan(1e-3f), "a window of 16 changes the logits past it");
    }

    private static string Mixtral(params (string Field, object? Value)[] changes) => HfTestConfigs.With(
        HfTestConfigs.With(HfTestConfigs.Llama, ("model_type", "mixtral"), ("architectures", new JsonArray("MixtralForCausalLM")),
            ("num_local_experts", 4), ("num_experts_per_tok", 2)), changes);

    [TestCase(false, "16", 16, TestName = "MixtralConfig_has_no_use_sliding_window_switch_so_false_keeps_sliding_window_16_on_every_layer")]
    [TestCase(null, "16", 16, TestName = "MixtralConfig_sliding_window_16_slides_every_layer")]
    [TestCase(true, "null", null, TestName = "MixtralConfig_explicit_null_sliding_window_is_no_window")]
    [TestCase(true, "<remove>", null, TestName = "MixtralConfig_absent_sliding_window_defaults_to_null_no_window")]
    public void Mixtral_reads_sliding_window_alone_as_MixtralConfig_and_MixtralAttention_do(bool? useSlidingWindow, string window, int? expected)
    {
        string json = Mixtral();
        if (window != "<remove>") json = HfTestConfigs.With(json, ("sliding_window", window == "null" ? null : int.Parse(window)));
        if (useSlidingWindow is { } use) json = HfTestConfigs.With(json, ("use_sliding_window", use));
        var config = DecoderConfig.FromHuggingFace(json);
        Assert.That(Windows(config), Is.EqualTo(Enumerable.Repeat(expected, config.NumLayers)));
        Assert.That(config.SlidingLayers, Is.Null, "one window for every layer");
    }

    private static IEnumerable<TestCaseData> EveryLayerCases()
    {
        // Phi3Config and Starcoder2Config: sliding_window (null by default) on every layer, no use_sliding_window switch.
        foreach (var (type, json) in new[] { ("phi3", HfTestConfigs.Phi3Mini), ("starcoder2", HfTestConfigs.Starcoder2) })
        {
            yield return new TestCaseData(HfTestConfigs.With(json, ("sliding_window", 16), ("use_sliding_window", false)), 16)
                .SetName($"{type}_config_slides_every_layer_on_sliding_window_16_whatever_use_sliding_window_says");
            yield return new TestCaseData(HfTestConfigs.With(json, ("sliding_window", null)), null).SetName($"{type}_config_explicit_null_sliding_window_is_no_window");
            yield return new TestCaseData(Without(json, "sliding_window"), null).SetName($"{type}_config_absent_sliding_window_defaults_to_null_no_window");
        }
    }

    [TestCaseSource(nameof(EveryLayerCases))]
    public void Phi3_and_Starcoder2_put_sliding_window_on_every_layer_when_it_is_not_null(string json, int? expected)
    {
        var config = DecoderConfig.FromHuggingFace(json);
        var layers = Enumerable.Repeat(expected, config.NumLayers);
        Assert.That(Windows(config), Is.EqualTo(layers));
        Assert.That(HfSpec.Parse(json).LayerWindows, Is.EqualTo(layers), "the reference reads the same windows");
        Assert.That(OrtWindowAttributes(json), Is.EqualTo(Enumerable.Repeat(expected is not null, config.NumLayers)), "local_window_size per layer");
    }

    [TestCase(true, 16, new[] { false, false, false, true }, TestName = "SmolLM3Config_use_sliding_window_with_sliding_window_16_slides_only_the_NoPE_layers")]
    [TestCase(false, 16, new[] { false, false, false, false }, TestName = "SmolLM3Config_use_sliding_window_false_slides_no_layer")]
    [TestCase(true, null, new[] { false, false, false, false }, TestName = "SmolLM3Config_null_sliding_window_slides_no_layer")]
    public void SmolLM3_slides_the_layers_SmolLM3Config_names_in_layer_types(bool use, int? window, bool[] sliding)
    {
        // SmolLM3Config's default layer_types: sliding_attention where use_sliding_window, sliding_window is not None and
        // the layer has no rotary (no_rope_layers [1, 1, 1, 0] here); SmolLM3Attention takes the window on those alone.
        string json = HfTestConfigs.With(HfTestConfigs.SmolLM3, ("use_sliding_window", use), ("sliding_window", window));
        var config = DecoderConfig.FromHuggingFace(json);
        var layers = sliding.Select(s => s ? window : null).ToArray();
        Assert.That(Windows(config), Is.EqualTo(layers));
        Assert.That(HfSpec.Parse(json).LayerWindows, Is.EqualTo(layers), "the reference reads the same windows");
        Assert.That(OrtWindowAttributes(json), Is.EqualTo(sliding), "local_window_size per layer");
    }

    [TestCase(false, "16", null, TestName = "Qwen3MoeConfig_use_sliding_window_false_drops_sliding_window_16")]
    [TestCase(true, "<remove>", 4096, TestName = "Qwen3MoeConfig_use_sliding_window_true_with_absent_sliding_window_is_the_default_4096_on_every_layer")]
    [TestCase(true, "null", null, TestName = "Qwen3MoeConfig_use_sliding_window_true_with_explicit_null_sliding_window_is_no_window")]
    public void Qwen3_moe_keeps_sliding_window_only_with_use_sliding_window_as_Qwen3MoeConfig_does(bool use, string window, int? expected)
    {
        // Qwen3MoeConfig: sliding_window (default 4096) is kept only when use_sliding_window; Qwen3MoeAttention puts it on
        // every layer and Qwen3MoeModel picks the sliding mask whenever it is not None.
        string json = HfTestConfigs.With(HfTestConfigs.Qwen3Moe, ("use_sliding_window", use));
        json = window switch
        {
            "<remove>" => Without(json, "sliding_window"),
            "null" => HfTestConfigs.With(json, ("sliding_window", null)),
            _ => HfTestConfigs.With(json, ("sliding_window", int.Parse(window))),
        };
        var config = DecoderConfig.FromHuggingFace(json);
        var layers = Enumerable.Repeat(expected, config.NumLayers);
        Assert.That(Windows(config), Is.EqualTo(layers));
        Assert.That(HfSpec.Parse(json).LayerWindows, Is.EqualTo(layers), "the reference reads the same windows");
    }

    [TestCase(false, "16", 16, TestName = "GptOssConfig_has_no_use_sliding_window_switch_so_false_keeps_sliding_window_16_on_the_even_layers")]
    [TestCase(null, "<remove>", 128, TestName = "GptOssConfig_absent_sliding_window_is_the_default_128_on_the_even_layers")]
    public void Gpt_oss_slides_its_default_layer_types_over_sliding_window_as_GptOssConfig_does(bool? use, string window, int? expected)
    {
        // GptOssConfig: sliding_window defaults to 128, layer_types to sliding_attention on the even layers; GptOssAttention
        // takes config.sliding_window on those layers and no switch turns it off.
        string json = use is { } u ? HfTestConfigs.With(HfTestConfigs.GptOssDefaultLayers, ("use_sliding_window", u)) : HfTestConfigs.GptOssDefaultLayers;
        json = window switch
        {
            "<remove>" => Without(json, "sliding_window"),
            "null" => HfTestConfigs.With(json, ("sliding_window", null)),
            _ => HfTestConfigs.With(json, ("sliding_window", int.Parse(window))),
        };
        var config = DecoderConfig.FromHuggingFace(json);
        var layers = Enumerable.Range(0, config.NumLayers).Select(i => i % 2 == 0 ? expected : null).ToArray();
        Assert.That(Windows(config), Is.EqualTo(layers));
        Assert.That(HfSpec.Parse(json).LayerWindows, Is.EqualTo(layers), "the reference reads the same windows");
    }

    [Test]
    public void GptOssConfig_explicit_null_sliding_window_with_sliding_layers_is_refused_as_transformers_sliding_mask_refuses_it()
    {
        string json = HfTestConfigs.With(HfTestConfigs.GptOssDefaultLayers, ("sliding_window", null));
        Assert.That(() => DecoderConfig.FromHuggingFace(json), Throws.TypeOf<ConfigException>().With.Message.EqualTo(
            "config.json: sliding_window is null while layer_types names sliding_attention layers (by default the even layers): "
            + "give the window or mark every layer full_attention"));
        Assert.That(() => HfSpec.Parse(json), Throws.TypeOf<FormatException>(), "the reference refuses it too");
    }
}
