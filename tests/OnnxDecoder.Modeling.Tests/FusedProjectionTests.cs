using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Lowerings;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Onnx.Proto;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>
/// The ort lowering's fused graph: q/k/v as one projection (packed into GroupQueryAttention where nothing sits between),
/// gate/up as one projection, and rotary inside GroupQueryAttention where its kernel takes the head size. Numbers are
/// checked against the plain-loop reference and against the portable lowering, which keeps one matmul per tensor.
/// </summary>
public class FusedProjectionTests
{
    /// <summary>head_dim 16: GroupQueryAttention's own rotary takes it (head_dim % 16 == 0).</summary>
    private static DecoderConfig Rotating => TestConfigs.Base with { HiddenSize = 64, HeadDim = 16, IntermediateSize = 64, MaxPositions = 128 };

    private static List<NodeProto> Nodes(DecoderConfig config, ExportOptions options) =>
        [.. FamilyRegistry.For(config).Build(config, TestConfigs.Weights(config), options).ToModelProto().Graph.Node];

    private static int Count(List<NodeProto> nodes, string op) => nodes.Count(n => n.OpType == op);

    private static long IntAttribute(NodeProto node, string name) => node.Attribute.SingleOrDefault(a => a.Name == name)?.I ?? 0;

    public static IEnumerable<TestCaseData> Precisions()
    {
        yield return new TestCaseData("fp32", null, false).SetArgDisplayNames("fp32");
        yield return new TestCaseData("fp16", null, true).SetArgDisplayNames("fp16");
        yield return new TestCaseData("int8", 8, false).SetArgDisplayNames("int8");
        yield return new TestCaseData("int4", 4, false).SetArgDisplayNames("int4");
    }

    [TestCaseSource(nameof(Precisions))]
    public void Each_layer_has_one_qkv_and_one_gate_up_projection_and_gqa_rotates_packed_qkv(string precision, int? bits, bool float16)
    {
        var config = Rotating with { TieWordEmbeddings = false };
        var options = new ExportOptions
        {
            Lowering = Lowering.Ort, Float16 = float16,
            Quantization = bits is { } b ? new QuantizationOptions { Bits = b } : null,
        };
        var nodes = Nodes(config, options);
        string matmul = bits is null ? "MatMul" : "MatMulNBits";
        Assert.That(Count(nodes, matmul), Is.EqualTo(config.NumLayers * 4 + 1), $"{precision}: qkv, o, gate_up, down per layer, and the head");
        Assert.That(nodes.Where(n => n.OpType == matmul && n.Name.Contains("/attn/")).Select(n => n.Name.Split('/')[^2]),
            Is.EquivalentTo(Enumerable.Range(0, config.NumLayers).SelectMany(_ => new[] { "qkv_proj", "o_proj" })));
        Assert.That(Count(nodes, "RotaryEmbedding"), Is.Zero, "GroupQueryAttention rotates");
        var attention = nodes.Where(n => n.OpType == "GroupQueryAttention").ToList();
        Assert.That(attention, Has.Count.EqualTo(config.NumLayers));
        foreach (var node in attention)
        {
            Assert.That(IntAttribute(node, "do_rotary"), Is.EqualTo(1));
            Assert.That(node.Input[1], Is.Empty, "key comes packed in the query input");
            Assert.That(node.Input[2], Is.Empty, "value comes packed in the query input");
            Assert.That(node.Input[7], Is.EqualTo("cos_cache"));
            Assert.That(node.Input[9], Is.Empty, "positions follow the KV columns (see OrtLowering)");
        }
        Assert.That(Count(nodes, "Split"), Is.EqualTo(config.NumLayers), "only gate_up is split");
    }

    [Test]
    public void Head_sizes_gqa_cannot_rotate_keep_rotary_embedding_over_one_split_projection()
    {
        var config = TestConfigs.Base;                       // head_dim 8, like stories260K
        var nodes = Nodes(config, new ExportOptions { Lowering = Lowering.Ort });
        Assert.That(Count(nodes, "RotaryEmbedding"), Is.EqualTo(2 * config.NumLayers));
        Assert.That(nodes.Count(n => n.OpType == "MatMul" && n.Name.EndsWith("/qkv_proj/MatMul")), Is.EqualTo(config.NumLayers));
        Assert.That(nodes.Where(n => n.OpType == "GroupQueryAttention").Select(n => IntAttribute(n, "do_rotary")), Is.All.Zero);
        Assert.That(Count(nodes, "Split"), Is.EqualTo(2 * config.NumLayers), "qkv and gate_up are each split");

        var partial = Rotating with { PartialRotaryFactor = 0.5 };   // rot 8: cos_cache [max, 4] is not a multiple of 8
        Assert.That(OrtLowering.GqaRotates(partial, Components.AttentionLayer.Of(partial, 0)), Is.False);
        Assert.That(Count(Nodes(partial, new ExportOptions { Lowering = Lowering.Ort }), "RotaryEmbedding"), Is.EqualTo(2 * partial.NumLayers));
        var dynamic = Rotating with { MaxPositions = 4, RopeScaling = new RopeScaling { Type = RopeScalingType.Dynamic, Factor = 3 } };
        Assert.That(OrtLowering.GqaRotates(dynamic, Components.AttentionLayer.Of(dynamic, 0)), Is.False, "the dynamic scaling's tables are computed in the graph");
    }

    [Test]
    public void The_portable_lowering_keeps_one_matmul_per_checkpoint_tensor()
    {
        var nodes = Nodes(Rotating, new ExportOptions { Lowering = Lowering.Portable });
        Assert.That(nodes.Count(n => n.Name.EndsWith("/q_proj/MatMul") || n.Name.EndsWith("/gate_proj/MatMul")), Is.EqualTo(2 * Rotating.NumLayers));
        Assert.That(nodes.Any(n => n.Name.Contains("qkv_proj") || n.Name.Contains("gate_up_proj")), Is.False);
    }

    /// <summary>Every pairwise row of the option space at head_dim 16, so the ort graph's rotary (in GQA where it qualifies) and
    /// fused projections meet every scaling, layout, bias, window and feed-forward.</summary>
    public static IEnumerable<TestCaseData> RotatingRows()
    {
        foreach (var row in TestConfigs.PairwiseRows())
        {
            var (name, _) = TestConfigs.Make(row);
            yield return new TestCaseData(row).SetName($"Rotating({name})");
        }
        yield return new TestCaseData(null).SetName("Rotating(partial rotary 16 of head_dim 32)");
    }

    [TestCaseSource(nameof(RotatingRows))]
    public void Logits_match_the_reference_at_a_head_size_gqa_rotates(int[]? row)
    {
        var config = row is null
            ? Rotating with { HiddenSize = 128, HeadDim = 32, PartialRotaryFactor = 0.5 }
            : TestConfigs.Make(row).Config with { HiddenSize = 64, HeadDim = 16 };
        var weights = TestConfigs.Weights(config);
        const int length = 6;
        var ids = Tokens(1, length, config.VocabSize, seed: 11);
        float[] expected = new ReferenceDecoder(config, weights).Forward(ids, Ones(1, length), Positions(1, 0, length));
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Ort, MaxLength = Math.Max(config.MaxPositions, 16) });
        Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(1, length), Positions(1, 0, length)).Logits, expected), Is.LessThan(1e-4f));
    }

    public static IEnumerable<TestCaseData> DecodingConfigs()
    {
        yield return new TestCaseData(Rotating).SetArgDisplayNames("half-split");
        yield return new TestCaseData(Rotating with { RotaryLayout = RotaryLayout.Interleaved, SlidingWindow = 5 }).SetArgDisplayNames("interleaved-window");
        yield return new TestCaseData(Rotating with { ModelType = "qwen2", AttentionBias = true }).SetArgDisplayNames("qwen2-qkv-bias");
    }

    /// <summary>
    /// A left-padded batch prefilled, then decoded step by step from its own presents with each row's own positions: every
    /// step's logits equal the reference's over the whole padded sequence. GQA rotates at KV columns rather than at the
    /// positions given; this pins that the scores come out the same.
    /// </summary>
    [TestCaseSource(nameof(DecodingConfigs))]
    public void A_left_padded_batch_decodes_like_the_reference(DecoderConfig config)
    {
        var weights = TestConfigs.Weights(config, seed: 7);
        const int prompt = 7, pad = 3, steps = 6, total = prompt + steps;
        var ids = Tokens(2, total, config.VocabSize, seed: 3);
        var mask = Ones(2, total);
        var positions = Positions(2, 0, total);
        for (int t = 0; t < total; t++)
        {
            bool padding = t < pad;
            if (padding) ids[1, t] = 0;
            mask[1, t] = padding ? 0 : 1;
            positions[1, t] = padding ? 1 : t - pad;
        }
        var expected = new ReferenceDecoder(config, weights).Forward(ids, mask, positions);            // [2, total, vocab]
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Ort });
        int vocab = config.VocabSize;

        long[,] Columns(long[,] source, int start, int length)
        {
            var part = new long[2, length];
            for (int r = 0; r < 2; r++) for (int t = 0; t < length; t++) part[r, t] = source[r, start + t];
            return part;
        }
        float[] Row(float[] logits, int row, int length, int at) => logits.AsSpan((row * length + at) * vocab, vocab).ToArray();

        var step = decoder.Run(Columns(ids, 0, prompt), Columns(mask, 0, prompt), Columns(positions, 0, prompt));
        for (int t = 0; t < prompt; t++)
        {
            Assert.That(MaxAbsDifference(Row(step.Logits, 0, prompt, t), Row(expected, 0, total, t)), Is.LessThan(1e-4f), $"prefill row 0 at {t}");
            if (t >= pad) Assert.That(MaxAbsDifference(Row(step.Logits, 1, prompt, t), Row(expected, 1, total, t)), Is.LessThan(1e-4f), $"prefill row 1 at {t}");
        }
        for (int t = prompt; t < total; t++)
        {
            step = decoder.Run(Columns(ids, t, 1), Columns(mask, 0, t + 1), Columns(positions, t, 1), step.PresentKeys, step.PresentValues);
            for (int r = 0; r < 2; r++)
                Assert.That(MaxAbsDifference(Row(step.Logits, r, 1, 0), Row(expected, r, total, t)), Is.LessThan(1e-4f), $"decode row {r} at {t}");
        }
    }

    /// <summary>Fused (ort) and unfused (portable) graphs of a family with q/k norms and one with q/k/v biases agree.</summary>
    [TestCase("qwen3")]
    [TestCase("qwen2")]
    [TestCase("gemma3_text")]
    public void Fused_and_unfused_graphs_agree(string modelType)
    {
        var config = Rotating with { ModelType = modelType, AttentionBias = modelType == "qwen2" };
        var weights = TestConfigs.Weights(config, seed: 21);
        var ids = Tokens(2, 9, config.VocabSize, seed: 4);
        using var portable = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Portable });
        using var ort = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Ort });
        var a = portable.Run(ids, Ones(2, 9), Positions(2, 0, 9));
        var b = ort.Run(ids, Ones(2, 9), Positions(2, 0, 9));
        Assert.That(MaxAbsDifference(a.Logits, b.Logits), Is.LessThan(1e-4f));
        Assert.That(MaxAbsDifference(a.PresentKeys[1], b.PresentKeys[1]), Is.LessThan(1e-4f), "present keys, rotated inside GQA, agree");
        Assert.That(MaxAbsDifference(a.PresentValues[1], b.PresentValues[1]), Is.LessThan(1e-4f));
        var nodes = Nodes(config, new ExportOptions { Lowering = Lowering.Ort });
        Assert.That(nodes.Count(n => n.OpType == "MatMul" && n.Name.Contains("/attn/")), Is.EqualTo(2 * config.NumLayers), "qkv_proj and o_proj");
    }

    /// <summary>Quantizing the row-concatenated weight gives the concatenation of the parts' own quantized blocks.</summary>
    [TestCase(4, true)]
    [TestCase(4, false)]
    [TestCase(8, true)]
    [TestCase(8, false)]
    public void A_fused_quantized_weight_is_the_parts_quantized_one_after_another(int bits, bool symmetric)
    {
        var config = Rotating with { AttentionBias = true };
        var weights = TestConfigs.Weights(config);
        var q = new QuantizationOptions { Bits = bits, Symmetric = symmetric };
        var graph = FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Ort, Quantization = q }).ToModelProto().Graph;
        byte[] Initializer(string name) => graph.Initializer.Single(t => t.Name == name).RawData.ToByteArray();

        foreach (var (fused, parts) in new[]
        {
            ("model.layers.1.self_attn.qkv_proj.weight", new[] { "q_proj", "k_proj", "v_proj" }.Select(p => $"model.layers.1.self_attn.{p}.weight")),
            ("model.layers.0.mlp.gate_up_proj.weight", new[] { "gate_proj", "up_proj" }.Select(p => $"model.layers.0.mlp.{p}.weight")),
        })
        {
            var quantized = parts.Select(name =>
            {
                var source = weights.Get(name);
                return BlockQuantizer.Quantize(TensorTransforms.ReadFloats(source), (int)source.Shape[0], (int)source.Shape[1], q);
            }).ToList();
            Assert.That(Initializer(fused + ".quantized"), Is.EqualTo(quantized.SelectMany(w => w.Packed).ToArray()), fused);
            Assert.That(Initializer(fused + ".scales"), Is.EqualTo(quantized.SelectMany(w => w.Scales).SelectMany(BitConverter.GetBytes).ToArray()), fused);
            if (!symmetric) Assert.That(Initializer(fused + ".zero_points"), Is.EqualTo(quantized.SelectMany(w => w.ZeroPoints!).ToArray()), fused);
        }
        var bias = graph.Initializer.Single(t => t.Name == "model.layers.1.self_attn.qkv_proj.bias");
        Assert.That(bias.Dims, Is.EqualTo(new long[] { (config.NumHeads + 2 * config.NumKvHeads) * config.HeadDim }));
    }
}
