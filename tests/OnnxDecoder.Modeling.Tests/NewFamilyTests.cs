using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// The families added through the registry, each checked against the independent Hugging Face
/// reference (<see cref="HfReference"/>) on its real config.json fields: the tensors it reads, fp32
/// logits of a left-padded batch longer than any sliding window in both lowerings, 64-step decoding
/// against the full run, float16 within the float16 tests' tolerance, and int8 / int4 within 1e-4 of the
/// reference on the dequantized weights.
/// </summary>
public class NewFamilyTests
{
    /// <summary>The test table: one row per family config (config.json text with real field names).</summary>
    private static readonly (string Name, string Json)[] Families =
    [
        ("qwen3", HfTestConfigs.Qwen3),
        ("phi3-mini", HfTestConfigs.Phi3Mini),
        ("phi3.5-mini-longrope", HfTestConfigs.Phi35Mini),
        ("phi4-mini-partial-rotary-su", HfTestConfigs.Phi4Mini),
        ("gemma2", HfTestConfigs.Gemma2),
        ("gemma2-tight-softcaps", HfTestConfigs.Gemma2TightSoftcaps),
        ("llama-biases", HfTestConfigs.LlamaBiases),
        ("granite", HfTestConfigs.Granite),
        ("granite-biases", HfTestConfigs.GraniteBiases),
        ("olmo2", HfTestConfigs.Olmo2),
        ("olmo2-gqa", HfTestConfigs.Olmo2Gqa),
        ("smollm3", HfTestConfigs.SmolLM3),
        ("smollm3-sliding", HfTestConfigs.SmolLM3SlidingWindow),
        ("gemma3-text", HfTestConfigs.Gemma3Text),
        ("gemma3-text-layer-types", HfTestConfigs.Gemma3TextLayerTypes),
        ("phi2", HfTestConfigs.Phi2),
        ("phi2-qk-layernorm-tied", HfTestConfigs.Phi2QkLayerNorm),
        ("qwen3-moe", HfTestConfigs.Qwen3Moe),
        ("qwen3-moe-dense-layers-window", HfTestConfigs.Qwen3MoeDenseLayers),
        ("qwen2-moe-shared-expert-dense-layer-window", HfTestConfigs.Qwen2Moe),
        ("gpt-oss", HfTestConfigs.GptOss),
        ("gpt-oss-default-layers", HfTestConfigs.GptOssDefaultLayers),
        ("gemma-mqa", HfTestConfigs.Gemma),
        ("gemma-legacy-hidden-act-biases", HfTestConfigs.GemmaLegacyActivation),
        ("starcoder2-window", HfTestConfigs.Starcoder2),
        ("starcoder2-no-bias-mqa", HfTestConfigs.Starcoder2NoBias),
    ];

    public static IEnumerable<TestCaseData> Configs() => Families.Select(f => new TestCaseData(f.Json).SetArgDisplayNames(f.Name));

    public static IEnumerable<TestCaseData> ConfigsAndLowerings() =>
        from f in Families from lowering in new[] { Lowering.Portable, Lowering.Ort }
        select new TestCaseData(f.Json, lowering).SetArgDisplayNames(f.Name, lowering.ToString());

    [TestCaseSource(nameof(Configs))]
    public void The_family_reads_exactly_the_tensors_the_reference_reads(string json)
    {
        var config = DecoderConfig.FromHuggingFace(json);
        var ours = FamilyRegistry.For(config).ExpectedWeights(config).Select(s => $"{s.Name} [{string.Join(", ", s.Shape)}]").Order();
        var theirs = HfWeights.Expected(json).Select(s => $"{s.Name} [{string.Join(", ", s.Shape)}]").Order();
        Assert.That(ours, Is.EqualTo(theirs));
    }

    [TestCaseSource(nameof(ConfigsAndLowerings))]
    public void A_left_padded_batch_matches_the_reference_within_1e4(string json, Lowering lowering)
    {
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 7);
        const int length = 20;
        var (ids, mask, positions) = HfReferenceTests.Batch(length, config.VocabSize, seed: 3, 0, 6);
        var expected = new HfReference(json, weights).ForwardFloat(ids, mask, positions);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        var logits = decoder.Run(ids, mask, positions).Logits;
        int vocab = config.VocabSize;
        Assert.That(MaxAbsDifference(logits.AsSpan(0, length * vocab), expected.AsSpan(0, length * vocab)), Is.LessThan(1e-4f), "row 0");
        Assert.That(MaxAbsDifference(logits.AsSpan((length + 6) * vocab, (length - 6) * vocab), expected.AsSpan((length + 6) * vocab, (length - 6) * vocab)),
            Is.LessThan(1e-4f), "row 1's real tokens");

        // The padded row equals the row run alone.
        var alone = new long[1, length - 6];
        for (int t = 0; t < length - 6; t++) alone[0, t] = ids[1, t + 6];
        var aloneLogits = decoder.Run(alone, Ones(1, length - 6), Positions(1, 0, length - 6)).Logits;
        Assert.That(MaxAbsDifference(logits.AsSpan((length + 6) * vocab, (length - 6) * vocab), aloneLogits), Is.LessThan(1e-4f), "padded row = row alone");
    }

    [TestCaseSource(nameof(ConfigsAndLowerings))]
    public void Runs_on_both_sides_of_longropes_switch_match_the_reference(string json, Lowering lowering)
    {
        // Calls whose longest position stays within original_max_position_embeddings use the short
        // factors; one more position switches every position of the call to the long ones.
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 6);
        int original = config.RopeScaling.OriginalMaxPositions ?? 8;
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        foreach (int length in new[] { original, original + 1 })
        {
            var ids = Tokens(1, length, config.VocabSize, seed: length);
            var expected = new HfReference(json, weights).ForwardFloat(ids, Ones(1, length), Positions(1, 0, length));
            Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, length), Positions(1, 0, length)).Logits, expected), Is.LessThan(1e-4f), $"length {length}");
        }
    }

    [TestCaseSource(nameof(ConfigsAndLowerings))]
    public void Prefill_then_64_single_token_steps_equal_the_full_run(string json, Lowering lowering)
    {
        // Room for 64 steps; a LongRope prompt already past original_max_position_embeddings, since
        // keys cached under the short factors differ from a full run's (transformers re-runs the
        // whole sequence when a generation crosses it).
        json = HfTestConfigs.With(json, ("max_position_embeddings", 128));
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 8);
        int prompt = config.RopeScaling.Type == RopeScalingType.LongRope ? config.RopeScaling.OriginalMaxPositions!.Value + 1 : 8;
        const int steps = 64;
        int total = prompt + steps;
        var ids = Tokens(1, total, config.VocabSize, seed: 5);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        var full = decoder.Run(ids, Ones(1, total), Positions(1, 0, total)).Logits;
        var expected = new HfReference(json, weights).ForwardFloat(ids, Ones(1, total), Positions(1, 0, total));
        Assert.That(MaxAbsDifference(full, expected), Is.LessThan(1e-4f), "the full run matches the reference");

        var promptIds = new long[1, prompt];
        for (int t = 0; t < prompt; t++) promptIds[0, t] = ids[0, t];
        var step = decoder.Run(promptIds, Ones(1, prompt), Positions(1, 0, prompt));
        int vocab = config.VocabSize;
        for (int position = prompt; position < total; position++)
        {
            step = decoder.Run(new long[,] { { ids[0, position] } }, Ones(1, position + 1), Positions(1, position, 1), step.PresentKeys, step.PresentValues);
            Assert.That(MaxAbsDifference(step.Logits, full.AsSpan(position * vocab, vocab)), Is.LessThan(1e-4f), $"decode step at position {position}");
        }
    }

    [TestCaseSource(nameof(ConfigsAndLowerings))]
    public void Int4_graphs_compute_the_reference_on_dequantized_weights(string json, Lowering lowering) =>
        QuantizedGraphsComputeTheReference(json, lowering, new Quantization.QuantizationOptions { Bits = 4, BlockSize = 32 });

    /// <summary>int8: MatMulNBits (8 bits, blocks of 32) in the ort lowering, per-channel DequantizeLinear in the portable one.</summary>
    [TestCaseSource(nameof(ConfigsAndLowerings))]
    public void Int8_graphs_compute_the_reference_on_dequantized_weights(string json, Lowering lowering) =>
        QuantizedGraphsComputeTheReference(json, lowering, new Quantization.QuantizationOptions { Bits = 8, BlockSize = 32 });

    private static void QuantizedGraphsComputeTheReference(string json, Lowering lowering, Quantization.QuantizationOptions q)
    {
        // As the quantization tests do: the reference runs on the weights the quantized blocks hold, within 1e-4;
        // the portable graph at basic optimization (above it ONNX Runtime rewrites DequantizeLinear + MatMul).
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 10);
        var (ids, mask, positions) = HfReferenceTests.Batch(12, config.VocabSize, seed: 5, 0, 3);
        var dequantized = QuantizationTests.DequantizedCopy(config, weights, q, lowering == Lowering.Portable);
        string referenceJson = json;
        if (config.TieWordEmbeddings && (lowering == Lowering.Portable || !q.EmbeddingQuantized))
        {
            // A graph that gathers the float token table (portable; ort int8 by default) while its tied head reads the
            // quantized copy: the reference gets the two as an untied pair.
            const string table = "model.embed_tokens.weight";
            var head = QuantizationTests.Dequantized(weights.Values(table), config.VocabSize, config.HiddenSize, q, lowering == Lowering.Portable);
            dequantized.Add("lm_head.weight", head, weights.Shape(table));
            referenceJson = HfTestConfigs.With(json, ("tie_word_embeddings", false));
        }
        var expected = new HfReference(referenceJson, dequantized).ForwardFloat(ids, mask, positions);
        var level = lowering == Lowering.Portable ? Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_BASIC : Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL;
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, Quantization = q }, level);
        var logits = decoder.Run(ids, mask, positions).Logits;
        int vocab = config.VocabSize;
        Assert.That(MaxAbsDifference(logits.AsSpan(0, 12 * vocab), expected.AsSpan(0, 12 * vocab)), Is.LessThan(1e-4f), "row 0");
        Assert.That(MaxAbsDifference(logits.AsSpan(15 * vocab, 9 * vocab), expected.AsSpan(15 * vocab, 9 * vocab)), Is.LessThan(1e-4f), "left-padded row");
        var unquantized = new HfReference(json, weights).ForwardFloat(ids, mask, positions);
        Assert.That(MaxAbsDifference(unquantized.AsSpan(0, 12 * vocab), expected.AsSpan(0, 12 * vocab)), Is.GreaterThan(1e-4f), $"the check is sensitive: int{q.Bits} moves these logits");
    }

    [TestCaseSource(nameof(ConfigsAndLowerings))]
    public void Float16_graphs_match_the_reference_on_float16_weights(string json, Lowering lowering)
    {
        var config = DecoderConfig.FromHuggingFace(json);
        var weights = HfWeights.Random(json, seed: 9);
        var rounded = new InMemoryWeights();
        foreach (var spec in HfWeights.Expected(json))
            rounded.Add(spec.Name, weights.Values(spec.Name).Select(v => (float)(Half)v).ToArray(), weights.Shape(spec.Name));
        var (ids, mask, positions) = HfReferenceTests.Batch(12, config.VocabSize, seed: 4, 0, 3);
        var expected = new HfReference(json, rounded).ForwardFloat(ids, mask, positions);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, Float16 = true });
        var logits = decoder.Run(ids, mask, positions).Logits;
        float scale = expected.Max(Math.Abs);
        int vocab = config.VocabSize;
        // Row 0 whole; row 1 from its first real token (logits at padded slots carry no meaning).
        Assert.That(MaxAbsDifference(logits.AsSpan(0, 12 * vocab), expected.AsSpan(0, 12 * vocab)), Is.LessThan(0.004f * scale + 1e-3f), $"logits scale {scale}");
        Assert.That(MaxAbsDifference(logits.AsSpan(15 * vocab, 9 * vocab), expected.AsSpan(15 * vocab, 9 * vocab)), Is.LessThan(0.004f * scale + 1e-3f), "left-padded row");
    }
}
