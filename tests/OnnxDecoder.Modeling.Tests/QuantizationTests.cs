using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Modeling.Tests.Reference;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

public class QuantizationTests
{
    /// <summary>Plain loops, written from the definition: per block of K, symmetric 8-bit scale = max|w| / 127, symmetric
    /// 4-bit scale = -m / 8 for m the element of largest magnitude (ggml's Q4_0), both with zero point 2^(b-1); asymmetric [min(0, lo), max(0, hi)] onto [0, 2^b - 1]; q = clamp(round(w / s) + z).</summary>
    private static (int[] Q, float[] Scales, int[] Zeros) Reference(float[] w, int n, int k, int bits, int bs, bool symmetric)
    {
        int blocks = (k + bs - 1) / bs, levels = (1 << bits) - 1, half = 1 << (bits - 1);
        var q = new int[n * blocks * bs];
        var scales = new float[n * blocks];
        var zeros = new int[n * blocks];
        for (int row = 0; row < n; row++)
            for (int b = 0; b < blocks; b++)
            {
                var values = Enumerable.Range(b * bs, Math.Min(bs, k - b * bs)).Select(i => w[row * k + i]).ToArray();
                float extreme = values.MaxBy(Math.Abs);
                float scale = symmetric && bits == 4 ? extreme / -8 : symmetric ? values.Max(Math.Abs) / (half - 1) : (Math.Max(0, values.Max()) - Math.Min(0, values.Min())) / levels;
                int zero = symmetric ? half : scale == 0 ? 0 : Math.Clamp((int)MathF.Round(-Math.Min(0, values.Min()) / scale), 0, levels);
                scales[row * blocks + b] = scale;
                zeros[row * blocks + b] = zero;
                for (int i = 0; i < bs; i++)
                    q[(row * blocks + b) * bs + i] = i < values.Length ? Math.Clamp((int)MathF.Round(values[i] * (scale == 0 ? 0 : 1 / scale)) + zero, 0, levels) : zero;
            }
        return (q, scales, zeros);
    }

    [Test]
    public void Block_quantizer_matches_the_plain_loop_for_every_block_size_bits_and_symmetry(
        [Values(32, 64, 128)] int blockSize, [Values(4, 8)] int bits, [Values(true, false)] bool symmetric, [Values(128, 100)] int k)
    {
        const int n = 5;
        var random = new Random(blockSize * 31 + bits + k);
        var w = Enumerable.Range(0, n * k).Select(_ => (float)(random.NextDouble() * 3 - 1)).ToArray(); // skewed: asymmetric matters
        var quantized = BlockQuantizer.Quantize(w, n, k, new QuantizationOptions { Bits = bits, BlockSize = blockSize, Symmetric = symmetric, SearchScales = false });
        var (q, scales, zeros) = Reference(w, n, k, bits, blockSize, symmetric);
        int blocks = (k + blockSize - 1) / blockSize;

        Assert.That(quantized.Scales, Is.EqualTo(scales));
        for (int row = 0; row < n; row++)
            for (int col = 0; col < blocks * blockSize; col++)
            {
                Assert.That(quantized.Quant(row, col), Is.EqualTo(q[(row * blocks + col / blockSize) * blockSize + col % blockSize]), $"q[{row}, {col}]");
                Assert.That(quantized.ZeroPoint(row, col / blockSize), Is.EqualTo(zeros[row * blocks + col / blockSize]));
            }
        var dequantized = quantized.Dequantize();
        for (int i = 0; i < w.Length; i++)
        {
            // Rounding to nearest loses at most half a step; Q4_0's side opposite the extreme clamps at +7 steps, so up to one step there.
            float step = Math.Abs(scales[(i / k) * blocks + (i % k) / blockSize]);
            Assert.That(dequantized[i], Is.EqualTo(w[i]).Within((symmetric && bits == 4 ? Math.Max(step / 2, Math.Abs(w[i]) - 7 * step) : step / 2) + 1e-6f),
                "rounding to nearest loses at most half a step");
        }
        Assert.That(quantized.Packed, Has.Length.EqualTo(n * blocks * blockSize * bits / 8), "MatMulNBits layout [N, blocks, block x bits / 8]");
    }

    [Test]
    public void Per_channel_int8_matches_the_plain_loop()
    {
        var random = new Random(2);
        const int n = 4, k = 37;
        var w = Enumerable.Range(0, n * k).Select(_ => (float)(random.NextDouble() * 2 - 0.5)).ToArray();
        foreach (bool symmetric in new[] { true, false })
        {
            var quantized = PerChannelWeight.Quantize(w, n, k, symmetric, searchScales: false);
            var (q, scales, zeros) = Reference(w, n, k, 8, k, symmetric);
            Assert.That(quantized.Scales, Is.EqualTo(scales));
            Assert.That(quantized.ZeroPoints.Select(z => (int)z), Is.EqualTo(zeros));
            Assert.That(quantized.Values.Select(v => (int)v), Is.EqualTo(q));
        }
    }

    /// <summary>The reference forward pass on the weights the quantized graph really computes with.</summary>
    /// <param name="float16">Float16 activations: MatMulNBits scales are stored as float16, and every
    /// weight the graph multiplies with is float16.</param>
    internal static InMemoryWeights DequantizedCopy(DecoderConfig c, InMemoryWeights w, QuantizationOptions q, bool portable, bool float16 = false)
    {
        var copy = new InMemoryWeights();
        foreach (var name in w.Names)
        {
            var shape = w.Shape(name);
            bool projected = name == "lm_head.weight" || name.Contains(".self_attn.") && name.EndsWith("proj.weight")
                || name.Contains(".mlp.") && name.EndsWith("proj.weight") || name.Contains(".experts.") && name.EndsWith(".weight")
                || name.EndsWith(".self_attn.dense.weight") || name.Contains(".mlp.fc") && name.EndsWith(".weight") // Phi's dense, fc1, fc2
                || name.EndsWith(".mlp.c_fc.weight") // StarCoder2's c_fc (its c_proj ends in proj.weight)
                || !portable && q.EmbeddingQuantized && name == "model.embed_tokens.weight"; // ort: the token table is gathered quantized (GatherBlockQuantized)
            float[] Half16(float[] values) => float16 ? values.Select(v => (float)(Half)v).ToArray() : values;
            // GPT-OSS's stacked experts [experts, in, out] go into QMoE blocks where the ort lowering carries them there:
            // each expert quantized as its [out, in] Linear would be.
            bool stackedExperts = name.EndsWith(".experts.gate_up_proj", StringComparison.Ordinal) || name.EndsWith(".experts.down_proj", StringComparison.Ordinal);
            if (stackedExperts && !portable && Lowerings.OrtLowering.QmoeCarries(c, q, float16))
            {
                int experts = (int)shape[0], inputs = (int)shape[1], outputs = (int)shape[2];
                var values = w.Values(name);
                var dequantizedExperts = new float[values.Length];
                for (int e = 0; e < experts; e++)
                {
                    var linear = new float[outputs * inputs];                                  // [out, in]
                    for (int i = 0; i < inputs; i++)
                        for (int o = 0; o < outputs; o++) linear[o * inputs + i] = values[((long)e * inputs + i) * outputs + o];
                    var back = Dequantized(linear, outputs, inputs, q, portable: false);
                    for (int i = 0; i < inputs; i++)
                        for (int o = 0; o < outputs; o++) dequantizedExperts[((long)e * inputs + i) * outputs + o] = back[o * inputs + i];
                }
                copy.Add(name, dequantizedExperts, shape);
                continue;
            }
            if (!projected) { copy.Add(name, Half16(w.Values(name)), shape); continue; }
            copy.Add(name, Half16(Dequantized(w.Values(name), (int)shape[0], (int)shape[1], q, portable, float16)), shape);
        }
        return copy;
    }

    /// <summary>A projection weight [n, k] as the quantized graph holds it: per-channel int8 (portable), blocks (the
    /// block size the export picks for width k), or float where k is not a whole number of blocks.</summary>
    internal static float[] Dequantized(float[] w, int n, int k, QuantizationOptions q, bool portable, bool float16 = false)
    {
        if (portable && q.Bits == 8) return PerChannelWeight.Quantize(w, n, k, q.Symmetric, q.SearchScales).Dequantize(); // portable int4 uses the blocks
        if (q.ForWidth(k) is not { } blockOptions) return w;
        var blocks = BlockQuantizer.Quantize(w, n, k, blockOptions);
        if (float16) blocks = blocks with { Scales = blocks.Scales.Select(s => (float)(Half)s).ToArray() };
        return blocks.Dequantize();
    }

    public static IEnumerable<TestCaseData> GraphCases()
    {
        var dense = TestConfigs.Base with { TieWordEmbeddings = false, AttentionBias = true };
        var moe = TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2, TieWordEmbeddings = false };
        var options = new[]
        {
            new QuantizationOptions { Bits = 4, BlockSize = 32 },
            new QuantizationOptions { Bits = 4, BlockSize = 64, Symmetric = false },
            new QuantizationOptions { Bits = 8, BlockSize = 128 },
            new QuantizationOptions { Bits = 8, BlockSize = 32, Symmetric = false },
        };
        foreach (var (name, config) in new[] { ("dense", dense), ("moe", moe) })
        {
            foreach (var q in options)
                yield return new TestCaseData(config, q, Lowering.Ort).SetArgDisplayNames(name, $"int{q.Bits}-b{q.BlockSize}-{(q.Symmetric ? "sym" : "asym")}", "ort");
            yield return new TestCaseData(config, new QuantizationOptions { Bits = 8 }, Lowering.Portable).SetArgDisplayNames(name, "int8-per-channel", "portable");
            yield return new TestCaseData(config, new QuantizationOptions { Bits = 4 }, Lowering.Portable).SetArgDisplayNames(name, "int4-b32-sym", "portable-opset21");
            yield return new TestCaseData(config, new QuantizationOptions { Bits = 4, BlockSize = 64, Symmetric = false }, Lowering.Portable).SetArgDisplayNames(name, "int4-b64-asym", "portable-opset21");
        }
        // An input width that is not a whole number of 32-blocks stays float (llama.cpp's rule): with intermediate 40 the
        // down projections are float MatMuls beside the quantized ones; block 64 and 128 fall back to 32 for width 32.
        var floatDown = TestConfigs.Base with { TieWordEmbeddings = false, HiddenSize = 64, NumHeads = 8, NumKvHeads = 2, IntermediateSize = 40 };
        yield return new TestCaseData(floatDown, new QuantizationOptions { Bits = 4, Symmetric = false }, Lowering.Portable).SetArgDisplayNames("down40-float", "int4-b32-asym", "portable-opset21");
        yield return new TestCaseData(floatDown, new QuantizationOptions { Bits = 4, BlockSize = 128 }, Lowering.Ort).SetArgDisplayNames("down40-float", "int4-b128-sym", "ort");
        // Tied embeddings: the gathered table and the LM head are one quantized copy. Hidden 48 is no whole number of blocks,
        // so the table (gathered and, transposed, the head) and every projection reading hidden stay float; only down is quantized.
        var tied = TestConfigs.Base with { TieWordEmbeddings = true, HiddenSize = 48, NumHeads = 6, NumKvHeads = 2, IntermediateSize = 64 };
        foreach (var q in options.Select(o => o with { QuantizeEmbedding = true }))
            yield return new TestCaseData(tied, q, Lowering.Ort).SetArgDisplayNames("tied-hidden48", $"int{q.Bits}-b{q.BlockSize}-{(q.Symmetric ? "sym" : "asym")}-table-quantized", "ort");
        var tied64 = TestConfigs.Base with { TieWordEmbeddings = true, HiddenSize = 64, NumHeads = 8, NumKvHeads = 2, IntermediateSize = 64 };
        foreach (var q in options.Select(o => o with { QuantizeEmbedding = true }))
            yield return new TestCaseData(tied64, q, Lowering.Ort).SetArgDisplayNames("tied-hidden64", $"int{q.Bits}-b{q.BlockSize}-{(q.Symmetric ? "sym" : "asym")}-table-quantized", "ort");
    }

    [TestCaseSource(nameof(GraphCases))]
    public void Quantized_graphs_compute_the_reference_on_dequantized_weights(DecoderConfig config, QuantizationOptions q, Lowering lowering)
    {
        var weights = TestConfigs.Weights(config.Validate());
        var ids = Tokens(1, 7, config.VocabSize, seed: 5);
        var expected = new ReferenceDecoder(config, DequantizedCopy(config, weights, q, lowering == Lowering.Portable)).Forward(ids, Ones(1, 7), Positions(1, 0, 7));
        // The portable graph is checked at basic optimization: at extended and above, ONNX Runtime's CPU
        // QDQ fusion rewrites DequantizeLinear + MatMul into an integer matmul that also quantizes the
        // activations (a different computation; bounded below).
        var level = lowering == Lowering.Portable ? GraphOptimizationLevel.ORT_ENABLE_BASIC : GraphOptimizationLevel.ORT_ENABLE_ALL;
        using (var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, Quantization = q }, level))
            Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, 7), Positions(1, 0, 7)).Logits, expected), Is.LessThan(1e-4f));
        if (lowering == Lowering.Portable)
        {
            using var fused = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering, Quantization = q });
            Assert.That(MaxAbsDifference(fused.Run(ids, Ones(1, 7), Positions(1, 0, 7)).Logits, expected), Is.LessThan(0.1f), "ORT's integer rewrite stays close");
        }

        var fp32 = new ReferenceDecoder(config, weights).Forward(ids, Ones(1, 7), Positions(1, 0, 7));
        Assert.That(MaxAbsDifference(fp32, expected), Is.GreaterThan(1e-4f), "the check is sensitive: quantization does move these logits");
    }

    [Test]
    public void Quantized_exports_use_the_right_ops_and_portable_int4_is_opset_21_standard_ops()
    {
        var config = TestConfigs.Base with { TieWordEmbeddings = false, IntermediateSize = 64 };
        var weights = TestConfigs.Weights(config);
        var ort = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Ort, Quantization = new QuantizationOptions { Bits = 4 } });
        Assert.That(ort.OpHistogram()["com.microsoft.MatMulNBits"], Is.EqualTo(2 * 4 + 1), "qkv (fused), o, gate_up (fused), down per layer, and the head");
        Assert.That(ort.OpHistogram().ContainsKey("MatMul"), Is.False);
        Assert.That(ort.OpHistogram()["com.microsoft.GatherBlockQuantized"], Is.EqualTo(1), "the token table is gathered quantized");
        Assert.That(ort.OpHistogram().ContainsKey("Gather"), Is.False);

        // Intermediate 40 is no whole number of 32-blocks: each down projection stays a float MatMul, and the summary says so.
        var floatDownConfig = TestConfigs.Base with { TieWordEmbeddings = false, IntermediateSize = 40 };
        var floatDown = FamilyRegistry.For(floatDownConfig).Build(floatDownConfig, TestConfigs.Weights(floatDownConfig),
            new ExportOptions { Lowering = Lowering.Ort, Quantization = new QuantizationOptions { Bits = 4 } });
        Assert.That(floatDown.OpHistogram()["com.microsoft.MatMulNBits"], Is.EqualTo(ort.OpHistogram()["com.microsoft.MatMulNBits"] - 2));
        Assert.That(floatDown.OpHistogram()["MatMul"], Is.EqualTo(2), "one float down projection per layer");
        Assert.That(floatDown.MetadataProps.Single(p => p.Key == OnnxDecoder.Onnx.GraphContract.Metadata.Quantization).Value,
            Does.Contain("kept float").And.Contain("model.layers.1.mlp.down_proj.weight [32, 40]"));

        var tiedConfig = TestConfigs.Base with { TieWordEmbeddings = true, IntermediateSize = 64 };
        var tied = FamilyRegistry.For(tiedConfig).Build(tiedConfig, TestConfigs.Weights(tiedConfig), new ExportOptions { Lowering = Lowering.Ort, Quantization = new QuantizationOptions { Bits = 4 } }).ToModelProto();
        var tables = tied.Graph.Initializer.Where(t => t.Name.StartsWith("model.embed_tokens.weight", StringComparison.Ordinal)).Select(t => t.Name).ToList();
        Assert.That(tables, Is.EquivalentTo(new[] { "model.embed_tokens.weight.quantized", "model.embed_tokens.weight.scales" }),
            "one quantized copy serves the gather and the tied head; no float table");
        var portable = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Quantization = new QuantizationOptions { Bits = 8 } });
        Assert.That(portable.OpHistogram()["DequantizeLinear"], Is.EqualTo(15));
        Assert.That(portable.ToModelProto().OpsetImport.Single(o => o.Domain == "").Version, Is.EqualTo(17));
        var portableInt4 = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Quantization = new QuantizationOptions { Bits = 4 } }).ToModelProto();
        Assert.That(portableInt4.OpsetImport.Single(o => o.Domain == "").Version, Is.EqualTo(21), "blocked 4-bit DequantizeLinear");
        Assert.That(portableInt4.OpsetImport.Any(o => o.Domain == "com.microsoft"), Is.False, "standard ops only");
        Assert.That(portableInt4.Graph.Node.Where(n => n.OpType == "DequantizeLinear").Select(n => n.Attribute.Single(a => a.Name == "block_size").I).ToList(), Has.Count.EqualTo(15).And.All.EqualTo(32));
        Assert.That(portableInt4.Graph.Initializer.Where(t => t.Name.EndsWith(".quantized")).Select(t => t.DataType), Is.All.EqualTo((int)OnnxDecoder.Onnx.ElementType.UInt4));
        Assert.That(() => new QuantizationOptions { BlockSize = 48 }.Validate(), Throws.TypeOf<ArgumentOutOfRangeException>());
    }
}
