using System.Text.Json.Nodes;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;
using static OnnxDecoder.Modeling.Tests.SlidingWindowConfigs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// Qwen2, Qwen3 and their MoE variants under use_sliding_window, as transformers' Qwen2Config, Qwen3Config,
/// Qwen2MoeConfig and Qwen3MoeConfig decide: which layers slide for given max_window_layers / layer_types, the
/// refusals, and tiny exports with a window shorter than the prompt against the Hugging Face reference.
/// </summary>
public class QwenSlidingWindowTests
{
    /// <summary>Qwen2 with three layers, window 4 from layer 1 on (max_window_layers 1).</summary>
    private static readonly string Qwen2UpperLayers = HfTestConfigs.With(HfTestConfigs.Qwen2, ("num_hidden_layers", 3), ("max_window_layers", 1));

    private static JsonArray Types(params string[] kinds) => [.. kinds.Select(k => (JsonNode)JsonValue.Create(k + "_attention"))];

    private static IEnumerable<TestCaseData> LayerCases()
    {
        foreach (var (type, json) in new[] { ("qwen2", Qwen2UpperLayers), ("qwen3", HfTestConfigs.Qwen3SlidingWindow) })
        {
            yield return new TestCaseData(json, new int?[] { null, 4, 4 }).SetArgDisplayNames(type, "layers from max_window_layers on");
            yield return new TestCaseData(HfTestConfigs.With(json, ("max_window_layers", 0)), new int?[] { 4, 4, 4 }).SetArgDisplayNames(type, "max_window_layers 0");
            yield return new TestCaseData(Without(json, "max_window_layers"), new int?[] { null, null, null }).SetArgDisplayNames(type, "default max_window_layers 28");
            yield return new TestCaseData(HfTestConfigs.With(json, ("use_sliding_window", false), ("max_window_layers", 0)), new int?[] { null, null, null })
                .SetArgDisplayNames(type, "use_sliding_window false");
            yield return new TestCaseData(Without(HfTestConfigs.With(json, ("max_window_layers", 2)), "sliding_window"), new int?[] { null, null, 4096 })
                .SetArgDisplayNames(type, "default sliding_window 4096");
            yield return new TestCaseData(HfTestConfigs.With(json, ("sliding_window", null), ("max_window_layers", 0)), new int?[] { null, null, null })
                .SetArgDisplayNames(type, "sliding_window null");
            yield return new TestCaseData(HfTestConfigs.With(json, ("layer_types", Types("sliding", "full", "sliding")), ("max_window_layers", 2)), new int?[] { 4, null, 4 })
                .SetArgDisplayNames(type, "layer_types wins over max_window_layers");
            yield return new TestCaseData(HfTestConfigs.With(json, ("layer_types", Types("full", "full", "full")), ("max_window_layers", 0)), new int?[] { null, null, null })
                .SetArgDisplayNames(type, "layer_types all full");
        }
    }

    [TestCaseSource(nameof(LayerCases))]
    public void The_layers_that_slide_follow_transformers_rule_and_agree_with_the_reference(string json, int?[] expected)
    {
        var config = DecoderConfig.FromHuggingFace(json);
        Assert.That(Windows(config), Is.EqualTo(expected));
        Assert.That(HfSpec.Parse(json).LayerWindows, Is.EqualTo(expected), "the reference reads the same windows");
        // No sliding layer: the graph is the plain causal one, with no window anywhere.
        if (expected.All(w => w is null)) Assert.That(config.SlidingWindow, Is.Null);
    }

    [Test]
    public void Qwen2_moe_slides_the_even_layers_below_max_window_layers()
    {
        var moe = JsonNode.Parse(HfTestConfigs.Qwen2)!.AsObject();
        moe["model_type"] = "qwen2_moe";
        moe["architectures"] = new JsonArray("Qwen2MoeForCausalLM");
        moe["num_hidden_layers"] = 5;
        moe["max_window_layers"] = 3;
        moe["num_experts"] = 4;
        moe["num_experts_per_tok"] = 2;
        moe["moe_intermediate_size"] = 16;
        moe["shared_expert_intermediate_size"] = 24;
        string json = moe.ToJsonString();
        Assert.That(Windows(DecoderConfig.FromHuggingFace(json)), Is.EqualTo(new int?[] { 4, null, 4, null, null }), "Qwen2MoeConfig: i even and i < max_window_layers");
        Assert.That(Windows(DecoderConfig.FromHuggingFace(HfTestConfigs.With(json, ("use_sliding_window", false)))), Has.All.Null);
        Assert.That(Windows(DecoderConfig.FromHuggingFace(HfTestConfigs.With(json, ("layer_types", Types("full", "sliding", "full", "full", "sliding"))))),
            Is.EqualTo(new int?[] { null, 4, null, null, 4 }));
    }

    [Test]
    public void Qwen3_moe_puts_the_window_on_every_layer_whatever_max_window_layers_says()
    {
        string json = HfTestConfigs.With(HfTestConfigs.Qwen3Moe, ("use_sliding_window", true), ("sliding_window", 4), ("max_window_layers", 1));
        var config = DecoderConfig.FromHuggingFace(json);
        Assert.That(Windows(config), Has.All.EqualTo(4));
        Assert.That(HfSpec.Parse(json).LayerWindows, Has.All.EqualTo(4), "the reference reads the same windows");
    }

    [TestCase("qwen2")]
    [TestCase("qwen3")]
    public void A_sliding_layer_without_a_window_is_refused_naming_the_field(string type)
    {
        string json = type == "qwen2" ? Qwen2UpperLayers : HfTestConfigs.Qwen3SlidingWindow;
        string off = HfTestConfigs.With(json, ("use_sliding_window", false), ("layer_types", Types("full", "sliding", "full")));
        Assert.That(() => DecoderConfig.FromHuggingFace(off), Throws.TypeOf<ConfigException>().With.Message.StartsWith(
            "config.json: use_sliding_window is false, so no window is in effect, while layer_types names sliding_attention layers: set use_sliding_window true"));
        string nullWindow = HfTestConfigs.With(json, ("sliding_window", null), ("layer_types", Types("full", "sliding", "full")));
        Assert.That(() => DecoderConfig.FromHuggingFace(nullWindow), Throws.TypeOf<ConfigException>().With.Message.StartsWith(
            "config.json: sliding_window is null while layer_types names sliding_attention layers"));
        string wrongCount = HfTestConfigs.With(json, ("layer_types", Types("full", "sliding")));
        Assert.That(() => DecoderConfig.FromHuggingFace(wrongCount).Validate(), Throws.TypeOf<ConfigException>().With.Message.Contains("layer_types must name 3 layers"));
    }

    private static IEnumerable<TestCaseData> ExportCases() =>
        from c in new[] { ("qwen2", Qwen2UpperLayers), ("qwen3", HfTestConfigs.Qwen3SlidingWindow) }
        from lowering in new[] { Lowering.Portable, Lowering.Ort }
        select new TestCaseData(c.Item2, lowering).SetArgDisplayNames(c.Item1, lowering.ToString());

    [TestCaseSource(nameof(ExportCases))]
    public void An_export_with_a_window_shorter_than_the_prompt_matches_the_reference_in_prefill_and_decode(string json, Lowering lowering)
    {
        // A 12-token left-padded batch (window 4), then 12 single-token steps past the window on the KV cache.
        var config = DecoderConfig.FromHuggingFace(json);
        Assert.That(config.SlidingLayers, Is.EqualTo(new[] { false, true, true }));
        var weights = HfWeights.Random(json, seed: 17);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        int vocab = config.VocabSize;

        const int length = 12, pad = 5;
        var (ids, mask, positions) = HfReferenceTests.Batch(length, vocab, seed: 23, 0, pad);
        var expected = new HfReference(json, weights).ForwardFloat(ids, mask, positions);
        var logits = decoder.Run(ids, mask, positions).Logits;
        Assert.That(MaxAbsDifference(logits.AsSpan(0, length * vocab), expected.AsSpan(0, length * vocab)), Is.LessThan(1e-4f), "row 0");
        Assert.That(MaxAbsDifference(logits.AsSpan((length + pad) * vocab, (length - pad) * vocab), expected.AsSpan((length + pad) * vocab, (length - pad) * vocab)),
            Is.LessThan(1e-4f), "row 1's real tokens");

        const int prompt = 6, steps = 12, total = prompt + steps;
        var sequence = Tokens(1, total, vocab, seed: 29);
        var full = new HfReference(json, weights).ForwardFloat(sequence, Ones(1, total), Positions(1, 0, total));
        var promptIds = new long[1, prompt];
        for (int t = 0; t < prompt; t++) promptIds[0, t] = sequence[0, t];
        var step = decoder.Run(promptIds, Ones(1, prompt), Positions(1, 0, prompt));
        for (int position = prompt; position < total; position++)
        {
            step = decoder.Run(new long[,] { { sequence[0, position] } }, Ones(1, position + 1), Positions(1, position, 1), step.PresentKeys, step.PresentValues);
            Assert.That(MaxAbsDifference(step.Logits, full.AsSpan(position * vocab, vocab)), Is.LessThan(1e-4f), $"decode step at position {position}");
        }

        // The window matters here: the same weights with every layer full attention give other logits.
        string unwindowed = HfTestConfigs.With(json, ("use_sliding_window", false));
        var fullAttention = new HfReference(unwindowed, weights).ForwardFloat(sequence, Ones(1, total), Positions(1, 0, total));
        Assert.That(MaxAbsDifference(full, fullAttention), Is.GreaterThan(1e-3f), "positions past the window see fewer keys");
    }
}
