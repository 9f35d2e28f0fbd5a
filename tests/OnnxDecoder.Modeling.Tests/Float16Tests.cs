using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Onnx;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// --precision fp16: float16 weights, activations, KV cache and logits, norms and softmax in
/// float32. Checked against the double-precision reference on the same weights rounded to float16,
/// so what remains is the rounding of activations (ONNX Runtime's CPU runs float16 graphs by
/// inserting casts where it has no float16 kernel; CUDA runs them natively).
/// </summary>
public class Float16Tests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        var configs = new (string Name, DecoderConfig Config)[]
        {
            ("llama-gqa", TestConfigs.Base with { TieWordEmbeddings = false }),
            ("interleaved-partial-window-bias", TestConfigs.Base with { RotaryLayout = RotaryLayout.Interleaved, PartialRotaryFactor = 0.5, SlidingWindow = 3, AttentionBias = true }),
            ("rope-dynamic", TestConfigs.Base with { MaxPositions = 4, RopeScaling = new RopeScaling { Type = RopeScalingType.Dynamic, Factor = 3 } }),
            ("gpt2-like", TestConfigs.Base with { Positions = PositionKind.Learned, Norm = NormKind.LayerNorm, GatedMlp = false, HiddenAct = Activation.GeluTanh, NumKvHeads = 4 }),
            ("mixtral", TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2, TieWordEmbeddings = false }),
            ("qwen2-moe", TestConfigs.Base with { ModelType = "qwen2_moe", NumExperts = 4, ExpertsPerToken = 2, SharedExpertIntermediateSize = 24 }),
        };
        foreach (var (name, config) in configs)
            foreach (var lowering in new[] { Lowering.Portable, Lowering.Ort })
                yield return new TestCaseData(config.Validate(), lowering).SetArgDisplayNames(name, lowering.ToString().ToLowerInvariant());
    }

    private static InMemoryWeights RoundedToFloat16(DecoderConfig config, InMemoryWeights weights)
    {
        var copy = new InMemoryWeights();
        foreach (var spec in FamilyRegistry.For(config).ExpectedWeights(config))
            copy.Add(spec.Name, weights.Values(spec.Name).Select(v => (float)(Half)v).ToArray(), weights.Shape(spec.Name));
        return copy;
    }

    [TestCaseSource(nameof(Cases))]
    public void Float16_graphs_compute_the_reference_within_float16_rounding(DecoderConfig config, Lowering lowering)
    {
        var weights = TestConfigs.Weights(config);
        var reference = new ReferenceDecoder(config, RoundedToFloat16(config, weights));
        var ids = Tokens(2, 7, config.VocabSize, seed: 11);
        var mask = Ones(2, 7);
        mask[1, 0] = mask[1, 1] = 0;                                                   // row 1 left-padded
        var positions = new long[2, 7];
        for (int t = 0; t < 7; t++) { positions[0, t] = t; positions[1, t] = Math.Max(0, t - 2); }
        var expected = reference.Forward(ids, mask, positions);
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, Float16 = true });
        var full = decoder.Run(ids, mask, positions);
        float scale = expected.Max(Math.Abs);
        var rowZero = full.Logits.AsSpan(0, 7 * config.VocabSize);
        TestContext.Out.WriteLine($"max |logit| {scale:G4}, max difference {MaxAbsDifference(rowZero, expected.AsSpan(0, 7 * config.VocabSize)):G4}");
        Assert.That(MaxAbsDifference(rowZero, expected.AsSpan(0, 7 * config.VocabSize)), Is.LessThan(0.004f * scale + 1e-3f), $"logits scale {scale}");
        var lastOfRowOne = full.Logits.AsSpan((7 + 6) * config.VocabSize, config.VocabSize);
        Assert.That(MaxAbsDifference(lastOfRowOne, expected.AsSpan((7 + 6) * config.VocabSize, config.VocabSize)), Is.LessThan(0.004f * scale + 1e-3f), "left-padded row");

        // Incremental: 6 tokens, then the 7th through the float16 KV cache, equal the full run (both rows).
        var first = decoder.Run(Slice(ids, 0, 6), Slice(mask, 0, 6), Slice(positions, 0, 6));
        var step = decoder.Run(Slice(ids, 6, 1), mask, Slice(positions, 6, 1), first.PresentKeys, first.PresentValues);
        for (int row = 0; row < 2; row++)
            Assert.That(MaxAbsDifference(step.Logits.AsSpan(row * config.VocabSize, config.VocabSize), full.Logits.AsSpan((row * 7 + 6) * config.VocabSize, config.VocabSize)),
                Is.LessThan(0.004f * scale + 1e-3f), $"row {row}: cached = full");
    }

    private static long[,] Slice(long[,] a, int start, int length)
    {
        var result = new long[a.GetLength(0), length];
        for (int r = 0; r < a.GetLength(0); r++) for (int t = 0; t < length; t++) result[r, t] = a[r, start + t];
        return result;
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Float16_exports_store_half_weights_and_half_io_and_refuse_quantized_fp16(Lowering lowering)
    {
        var config = TestConfigs.Base.Validate();
        var model = FamilyRegistry.For(config).Build(config, TestConfigs.Weights(config), new ExportOptions { Lowering = lowering, Float16 = true }).ToModelProto();
        var graph = model.Graph;
        Assert.That(graph.Input.Where(i => i.Name.StartsWith("past_key_values")).Select(i => i.Type.TensorType.ElemType), Is.All.EqualTo((int)ElementType.Float16));
        Assert.That(graph.Output.Select(o => o.Type.TensorType.ElemType), Is.All.EqualTo((int)ElementType.Float16));
        var floatWeights = graph.Initializer.Where(t => t.Dims.Count >= 1 && t.Dims.Aggregate(1L, (a, b) => a * b) > 8 && t.DataType is (int)ElementType.Float or (int)ElementType.Float16).ToList();
        Assert.That(floatWeights, Is.Not.Empty);
        Assert.That(floatWeights.Where(t => t.DataType != (int)ElementType.Float16).Select(t => t.Name), Is.Empty, "every weight is float16");
        Assert.That(model.MetadataProps.Single(p => p.Key == "onnxdecoder.precision").Value, Is.EqualTo("fp16"));
    }

    public static IEnumerable<TestCaseData> QuantizedCases()
    {
        var dense = TestConfigs.Base with { TieWordEmbeddings = false, AttentionBias = true };
        var tied = TestConfigs.Base with { TieWordEmbeddings = true };
        var moe = TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2, TieWordEmbeddings = false };
        foreach (var (name, config) in new[] { ("dense", dense), ("tied", tied), ("moe", moe) })
        {
            yield return new TestCaseData(config.Validate(), new Quantization.QuantizationOptions { Bits = 4 }, Lowering.Ort).SetArgDisplayNames(name, "int4-fp16", "ort");
            yield return new TestCaseData(config.Validate(), new Quantization.QuantizationOptions { Bits = 8, Symmetric = false, BlockSize = 64 }, Lowering.Ort).SetArgDisplayNames(name, "int8-asym-fp16", "ort");
            if (name != "tied")
                yield return new TestCaseData(config.Validate(), new Quantization.QuantizationOptions { Bits = 8 }, Lowering.Portable).SetArgDisplayNames(name, "int8-fp16", "portable");
        }
    }

    /// <summary>int8/int4 weights with float16 activations (scales stored as float16): the reference
    /// runs on the dequantized weights rounded as the graph stores them.</summary>
    [TestCaseSource(nameof(QuantizedCases))]
    public void Quantized_weights_with_float16_activations_compute_the_reference(DecoderConfig config, Quantization.QuantizationOptions q, Lowering lowering)
    {
        var weights = TestConfigs.Weights(config);
        var ids = Tokens(1, 7, config.VocabSize, seed: 5);
        var expected = new ReferenceDecoder(config, QuantizationTests.DequantizedCopy(config, weights, q, lowering == Lowering.Portable, float16: true)).Forward(ids, Ones(1, 7), Positions(1, 0, 7));
        var level = lowering == Lowering.Portable ? Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_BASIC : Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL;
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, Quantization = q, Float16 = true }, level);
        float scale = expected.Max(Math.Abs);
        Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, 7), Positions(1, 0, 7)).Logits, expected), Is.LessThan(0.004f * scale + 1e-3f), $"logits scale {scale}");
    }

    [Test]
    public void A_weight_beyond_float16_range_fails_the_export_naming_it()
    {
        var config = TestConfigs.Base.Validate();
        var weights = TestConfigs.Weights(config);
        weights.Values("model.layers.0.mlp.up_proj.weight")[3] = 70000f;
        var model = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Float16 = true });
        Assert.That(() => model.ToModelProto(), Throws.TypeOf<InvalidDataException>().With.Message.Contains("tensor 'model.layers.0.mlp.up_proj.weight' holds 70000, beyond float16's range"));
    }
}
