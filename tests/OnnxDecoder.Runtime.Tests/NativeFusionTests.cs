using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;
using static OnnxDecoder.Onnx.Proto.AttributeProto.Types;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// The fused CPU ops of <see cref="NativeFusionGraph"/>, judged by ONNX Runtime's own ops on the same inputs: a graph of
/// Split and two com.microsoft RotaryEmbedding nodes (or Split, Sigmoid, Mul, Mul) runs as built and as rewritten, and the
/// outputs must agree. Then which graphs the rewrite touches (a real export, and near misses it must leave alone), and a
/// whole model decoding with the fusion on and off.
/// </summary>
public class NativeFusionTests
{
    private static readonly ExecutionProviderOptions FusionOff = new() { NativeKernels = false };

    [OneTimeSetUp]
    public void RequireLibrary() =>
        Assert.That(NativeKernels.IsAvailable, Is.True, $"libonnxdecoder_kernels.so is needed here: {NativeKernels.UnavailableReason}");

    // ---- the ops against ONNX Runtime's ------------------------------------------------------------------------------

    // Rotation is the same float products and one sum or difference per element in both: only an FMA contraction on one
    // side can change a result, by about an ulp of values under 4 (|x| < 2, |cos|, |sin| <= 1), so 1e-6 is ample.
    private const float RotaryTolerance = 1e-6f;

    [TestCase(8, 4, 8, 0, 0, 1, true)]
    [TestCase(8, 4, 8, 0, 1, 1, true)]
    [TestCase(8, 4, 8, 0, 1, 5, true)]
    [TestCase(8, 4, 8, 0, 0, 5, false)]
    [TestCase(8, 4, 8, 4, 1, 5, true)]
    [TestCase(8, 4, 8, 4, 0, 1, false)]
    [TestCase(2, 2, 64, 0, 0, 5, true)]
    [TestCase(2, 2, 64, 0, 1, 1, false)]
    [TestCase(2, 2, 64, 32, 0, 5, false)]
    [TestCase(2, 2, 64, 16, 1, 5, true)]
    public void SplitRotaryQkv_gives_what_Split_and_RotaryEmbedding_give(int heads, int kvHeads, int headSize, int rotaryDim, int interleaved,
        int sequence, bool positionsPerRow)
    {
        const int batch = 2, positions = 40;
        var model = RotaryGraph(heads, kvHeads, headSize, rotaryDim, interleaved, positions);
        var fused = model.Clone();
        Assert.That(NativeFusionGraph.Rewrite(fused), Is.EqualTo(new NativeFusions(1, 0)));
        Assert.That(fused.Graph.Node.Select(n => n.OpType), Is.EqualTo(new[] { NativeFusionGraph.SplitRotaryQkvOp }));

        int width = (heads + 2 * kvHeads) * headSize;
        var qkv = RandomFloats(batch * sequence * width, seed: 11);
        long[] positionIds = positionsPerRow
            ? [.. Enumerable.Range(0, batch * sequence).Select(i => (long)((i * 7 + 3) % positions))]
            : [positions - sequence - 2];
        var inputs = RotaryInputs(qkv, [batch, sequence, width], positionIds, positionsPerRow ? [batch, sequence] : [1]);
        var expected = Run(model, inputs);
        var actual = Run(fused, inputs);
        foreach (var name in new[] { "q_rotated", "k_rotated", "v" })
        {
            Assert.That(actual[name].Shape, Is.EqualTo(expected[name].Shape), name);
            Assert.That(MaxAbsDifference(actual[name].Values, expected[name].Values), Is.LessThanOrEqualTo(RotaryTolerance), name);
        }
        Assert.That(actual["v"].Values, Is.EqualTo(expected["v"].Values), "v is a copy");
    }

    [TestCase(true, 16)]
    [TestCase(true, -1)]
    [TestCase(false, 16)]
    [TestCase(false, -1)]
    public void SplitRotaryQkv_refuses_a_position_outside_the_cache(bool positionsPerRow, int outside)
    {
        const int positions = 16, sequence = 3;
        var fused = RotaryGraph(8, 4, 8, 0, 1, positions);
        Assert.That(NativeFusionGraph.Rewrite(fused).SplitRotaryQkv, Is.EqualTo(1));
        var qkv = RandomFloats(sequence * 128, seed: 5);
        // Per row: one id at the cache's length or below 0; [1]: a start whose last position (start + 2) is past the cache, or
        // a negative start.
        long[] ids = positionsPerRow ? [0, outside, 1] : [outside == positions ? positions - 2 : outside];
        var inputs = RotaryInputs(qkv, [1, sequence, 128], ids, positionsPerRow ? [1, sequence] : [1]);
        var error = Assert.Throws<OnnxRuntimeException>(() => Run(fused, inputs));
        Assert.That(error!.Message, Does.Contain("SplitRotaryQkv").And.Contain("outside the rotary cache's 16 positions"));
    }

    // Judged twice. Against the exact silu(g) u (in double): float rounding and a vectorised exp leave a few ulp, within
    // 1e-6 relative. Against ONNX Runtime's graph: its Sigmoid is a rational approximation good to about 2e-7 of sigmoid's
    // range [0, 1] but not relatively in the tails (at g = -10.7 it is 0.4% off), so there the two differ by up to
    // 2e-7 |g u|: 1e-6 |g u| bounds it.
    [TestCase(172, new[] { 5 })]
    [TestCase(172, new[] { 2, 3 })]
    [TestCase(2048, new[] { 3 })]
    [TestCase(2048, new[] { 2, 1 })]
    public void SiluMul_gives_what_Split_Sigmoid_Mul_Mul_give(int intermediate, int[] rows)
    {
        var model = SiluGraph(intermediate, rows.Length + 1, quickGelu: false, sigmoidFirst: false);
        var fused = model.Clone();
        Assert.That(NativeFusionGraph.Rewrite(fused), Is.EqualTo(new NativeFusions(0, 1)));
        Assert.That(fused.Graph.Node.Select(n => n.OpType), Is.EqualTo(new[] { NativeFusionGraph.SiluMulOp }));
        long[] shape = [.. rows.Select(r => (long)r), 2 * intermediate];
        // Gates over [-12, 12]: both tails of the logistic, where an approximation is weakest.
        var x = RandomFloats((int)shape.Aggregate(1L, (a, b) => a * b), seed: 7, scale: 24f);
        var inputs = new Dictionary<string, (float[], long[])> { ["x"] = (x, shape) };
        var expected = Run(model, inputs, []);
        var actual = Run(fused, inputs, []);
        Assert.That(actual["y"].Shape, Is.EqualTo(expected["y"].Shape));
        for (int i = 0; i < expected["y"].Values.Length; i++)
        {
            int row = i / intermediate, column = i % intermediate;
            double gate = x[row * 2 * intermediate + column], up = x[row * 2 * intermediate + intermediate + column];
            double exact = gate / (1 + Math.Exp(-gate)) * up, ours = actual["y"].Values[i], onnxRuntime = expected["y"].Values[i];
            Assert.That(Math.Abs(ours - exact), Is.LessThanOrEqualTo(1e-6 * Math.Abs(exact)), $"element {i} against the exact value");
            Assert.That(Math.Abs(ours - onnxRuntime), Is.LessThanOrEqualTo(1e-6 * Math.Abs(gate * up)), $"element {i} against ONNX Runtime");
        }
    }

    // ---- which graphs the rewrite touches ----------------------------------------------------------------------------

    [Test]
    public void A_stories260K_export_gets_one_fused_rotary_and_one_fused_silu_a_layer()
    {
        var model = LoadModel(Fixtures.Stories(Lowering.Ort));
        int nodes = model.Graph.Node.Count;
        Assert.That(NativeFusionGraph.Rewrite(model), Is.EqualTo(new NativeFusions(5, 5)));
        // Per layer: Split + 2 RotaryEmbedding -> 1, Split + Sigmoid + Mul + Mul -> 1.
        Assert.That(model.Graph.Node.Count, Is.EqualTo(nodes - 5 * 2 - 5 * 3));
        Assert.That(model.Graph.Node.Select(n => n.OpType),
            Has.None.EqualTo("Split").And.None.EqualTo("RotaryEmbedding").And.None.EqualTo("Sigmoid"));
        Assert.That(ModelChecker.Check(model), Is.Empty, "topological order, every input defined, the domain imported");
        var rotary = model.Graph.Node.First(n => n.OpType == NativeFusionGraph.SplitRotaryQkvOp);
        Assert.That(rotary.Name, Is.EqualTo("/model/layers.0/attn/qkv_proj/SplitRotaryQkv"));
        Assert.That(rotary.Attribute.ToDictionary(a => a.Name, a => a.I),
            Is.EqualTo(new Dictionary<string, long>
            {
                ["num_heads"] = 8, ["kv_num_heads"] = 4, ["head_size"] = 8, ["rotary_dim"] = 8, ["interleaved"] = 1,
            }));
    }

    [Test]
    public void A_float16_export_is_left_as_exported()
    {
        var model = LoadModel(Fixtures.Stories(Lowering.Ort, float16: true));
        Assert.That(NativeFusionGraph.Rewrite(model), Is.EqualTo(default(NativeFusions)));
    }

    [TestCase("llama-tiny")]
    [TestCase("qwen3-tiny")]
    [TestCase("phi3-tiny")]
    [TestCase("granite-tiny")]
    [TestCase("smollm3-tiny")]
    public void SiLU_families_fuse_their_gate_and_up_and_any_split_then_rotary(string preset)
    {
        var model = LoadModel(Fixtures.SynthExport(preset, seed: 3));
        int splits = model.Graph.Node.Count(IsGateUpSplit);
        Assert.That(splits, Is.GreaterThan(0), "the export splits a fused gate_up projection");
        int splitRotaries = model.Graph.Node.Count(n => n.OpType == "Split" && model.Graph.Node.Count(r => r.OpType == "RotaryEmbedding"
            && n.Output.Contains(r.Input[0])) == 2);
        var fused = NativeFusionGraph.Rewrite(model);
        TestContext.Out.WriteLine($"{preset}: {fused}; {model.Graph.Node.Count(n => n.OpType == "RotaryEmbedding")} RotaryEmbedding left");
        Assert.That(fused, Is.EqualTo(new NativeFusions(splitRotaries, splits)));
        Assert.That(model.Graph.Node.Select(n => n.OpType), Has.None.EqualTo("Sigmoid"));
        Assert.That(ModelChecker.Check(model), Is.Empty);
    }

    [Test]
    public void Gemma_GeGLU_is_left_as_exported()
    {
        var model = LoadModel(Fixtures.SynthExport("gemma-tiny", seed: 3));
        Assert.That(model.Graph.Node.Count(IsGateUpSplit), Is.GreaterThan(0), "the export splits a fused gate_up projection");
        var before = model.Graph.Node.Where(n => n.OpType != "RotaryEmbedding" && !n.Name.Contains("qkv_proj")).Select(n => n.Name).ToList();
        Assert.That(NativeFusionGraph.Rewrite(model).SiluMul, Is.Zero);
        Assert.That(model.Graph.Node.Select(n => n.Name), Is.SupersetOf(before), "every MLP node stays");
    }

    private static bool IsGateUpSplit(NodeProto node) => node.OpType == "Split" && node.Name.Contains("gate_up_proj");

    [Test]
    public void Both_orders_of_each_Mul_and_QuickGelu_with_alpha_1_fuse()
    {
        Assert.That(NativeFusionGraph.Rewrite(SiluGraph(16, 3, quickGelu: false, sigmoidFirst: true)).SiluMul, Is.EqualTo(1));
        Assert.That(NativeFusionGraph.Rewrite(SiluGraph(16, 3, quickGelu: true, sigmoidFirst: false)).SiluMul, Is.EqualTo(1));
        var otherAlpha = SiluGraph(16, 3, quickGelu: true, sigmoidFirst: false);
        otherAlpha.Graph.Node.Single(n => n.OpType == "QuickGelu").Attribute[0].F = 1.702f;
        Assert.That(NativeFusionGraph.Rewrite(otherAlpha).SiluMul, Is.Zero, "QuickGelu's default alpha is no SiLU");
    }

    // Opset 18's num_outputs cuts equal parts only when the width divides (else the last part is smaller): the rewrite
    // takes such a Split only where the input's width is declared.
    [Test]
    public void Opset_18_equal_parts_fuse_where_the_width_is_declared()
    {
        var silu = NumOutputs(SiluGraph(16, 2, quickGelu: false, sigmoidFirst: false), declaredWidth: 32);
        var fusedSilu = silu.Clone();
        Assert.That(NativeFusionGraph.Rewrite(fusedSilu).SiluMul, Is.EqualTo(1));
        var x = RandomFloats(3 * 32, seed: 9, scale: 8f);
        var siluInputs = new Dictionary<string, (float[], long[])> { ["x"] = (x, [3, 32]) };
        Assert.That(MaxAbsDifference(Run(fusedSilu, siluInputs, [])["y"].Values, Run(silu, siluInputs, [])["y"].Values), Is.LessThan(1e-5));
        Assert.That(NativeFusionGraph.Rewrite(NumOutputs(SiluGraph(16, 2, quickGelu: false, sigmoidFirst: false), declaredWidth: null)).SiluMul,
            Is.Zero, "an undeclared width may be odd");

        var rotary = NumOutputs(RotaryGraph(2, 2, 64, 0, 0, positions: 16), declaredWidth: 384);
        var fusedRotary = rotary.Clone();
        Assert.That(NativeFusionGraph.Rewrite(fusedRotary).SplitRotaryQkv, Is.EqualTo(1));
        var rotaryInputs = RotaryInputs(RandomFloats(2 * 384, seed: 4), [1, 2, 384], [3], [1]);
        var expected = Run(rotary, rotaryInputs);
        var actual = Run(fusedRotary, rotaryInputs);
        foreach (var name in new[] { "q_rotated", "k_rotated", "v" })
            Assert.That(MaxAbsDifference(actual[name].Values, expected[name].Values), Is.LessThanOrEqualTo(RotaryTolerance), name);
        var undeclared = NumOutputs(RotaryGraph(2, 2, 64, 0, 0, positions: 16), declaredWidth: null);
        Assert.That(NativeFusionGraph.Rewrite(undeclared).SplitRotaryQkv, Is.Zero);
    }

    /// <summary>The graph at opset 18 with its Split cutting num_outputs equal parts; the input's last dimension declared
    /// as <paramref name="declaredWidth"/> (rank 2 for x, rank 3 for qkv) or left unknown.</summary>
    private static ModelProto NumOutputs(ModelProto model, long? declaredWidth)
    {
        model.OpsetImport.Single(o => o.Domain == "").Version = 18;
        var split = Split(model.Graph);
        split.Input.RemoveAt(1);
        split.Attribute.Add(Int("num_outputs", split.Output.Count));
        model.Graph.Initializer.Remove(model.Graph.Initializer.Single(t => t.Name == "split_sizes"));
        var input = model.Graph.Input.Single(i => i.Name == split.Input[0]);
        int rank = input.Name == "x" ? 2 : 3;
        input.Type = TensorType(ElementType.Float, rank);
        if (declaredWidth is { } width) input.Type.TensorType.Shape.Dim[rank - 1] = new TensorShapeProto.Types.Dimension { DimValue = width };
        return model;
    }

    private static IEnumerable<TestCaseData> RotaryNearMisses()
    {
        yield return Miss("q read by another node too", g => g.Node.Add(Node("Identity", "", [Split(g).Output[0]], ["q_again"])));
        yield return Miss("k a graph output", g => g.Output.Add(FloatInfo(Split(g).Output[1])));
        yield return Miss("sizes that are not Hq D, Hkv D, Hkv D", g => SetInt64s(g, "split_sizes", [64, 40, 24]));
        yield return Miss("num_heads that do not give one head size", g => SetAttribute(Rotary(g, 1), "num_heads", 2));
        yield return Miss("k rotated with other caches", g =>
        {
            var local = g.Initializer.Single(t => t.Name == "cos_cache").Clone();
            local.Name = "cos_cache_local";
            g.Initializer.Add(local);
            Rotary(g, 1).Input[2] = "cos_cache_local";
        });
        yield return Miss("k interleaved differently", g => SetAttribute(Rotary(g, 1), "interleaved", 0));
        yield return Miss("a scale other than 1", g =>
            Rotary(g, 0).Attribute.Add(new AttributeProto { Name = "scale", Type = AttributeType.Float, F = 0.5f }));
        yield return Miss("packed batching", g => Rotary(g, 0).Attribute.Add(Int("is_packed_batching", 1)));
        yield return Miss("a rotary_embedding_dim whose R/2 is not the caches' width", g =>
            SetAttribute(Rotary(g, 0), "rotary_embedding_dim", 4, alsoOn: Rotary(g, 1)));
        yield return Miss("an axis other than the last", g => SetAttribute(Split(g), "axis", 0));
        yield return Miss("v read before the last rotary", g =>
        {
            var early = Node("Identity", "", [Split(g).Output[2]], ["v_early"]);
            g.Node.Insert(2, early);
            g.Output.Add(FloatInfo("v_early"));
        });
        yield return Miss("float16 caches", g =>
        {
            foreach (var cache in g.Initializer.Where(t => t.Name is "cos_cache" or "sin_cache")) cache.DataType = (int)ElementType.Float16;
        });
    }

    private static TestCaseData Miss(string what, Action<GraphProto> change) => new TestCaseData(change).SetArgDisplayNames(what);

    [TestCaseSource(nameof(RotaryNearMisses))]
    public void A_rotary_near_miss_is_left_as_it_is(Action<GraphProto> change)
    {
        var model = RotaryGraph(8, 4, 8, 0, 1, positions: 16);
        change(model.Graph);
        var before = model.Clone();
        Assert.That(NativeFusionGraph.Rewrite(model), Is.EqualTo(default(NativeFusions)));
        Assert.That(model, Is.EqualTo(before), "the graph is untouched");
    }

    private static IEnumerable<TestCaseData> SiluNearMisses()
    {
        yield return Miss("the gate read by another node too", g => g.Node.Add(Node("Identity", "", [Split(g).Output[0]], ["gate_again"])));
        yield return Miss("the sigmoid a graph output", g => g.Output.Add(FloatInfo(g.Node.Single(n => n.OpType == "Sigmoid").Output[0])));
        yield return Miss("the activation read by another node too", g =>
            g.Node.Add(Node("Identity", "", [g.Node[2].Output[0]], ["silu_again"])));
        yield return Miss("unequal halves", g => SetInt64s(g, "split_sizes", [10, 22]));
        yield return Miss("Tanh in place of Sigmoid", g => g.Node.Single(n => n.OpType == "Sigmoid").OpType = "Tanh");
        yield return Miss("the product with the gate, not the up half", g => g.Node[3].Input[1] = Split(g).Output[0]);
        yield return Miss("an Add in place of the last Mul", g => g.Node[3].OpType = "Add");
    }

    [TestCaseSource(nameof(SiluNearMisses))]
    public void A_silu_near_miss_is_left_as_it_is(Action<GraphProto> change)
    {
        var model = SiluGraph(16, 3, quickGelu: false, sigmoidFirst: false);
        change(model.Graph);
        var before = model.Clone();
        Assert.That(NativeFusionGraph.Rewrite(model), Is.EqualTo(default(NativeFusions)));
        Assert.That(model, Is.EqualTo(before), "the graph is untouched");
    }

    // ---- whole models, fusion on and off -----------------------------------------------------------------------------

    [TestCase("stories260K", 0, 10)]
    [TestCase("stories260K", 4, 10)]
    [TestCase("phi3-tiny", 0, 4)]
    public void An_export_decodes_the_same_tokens_with_the_fusion(string model, int bits, int fusedNodes)
    {
        string folder = model == "phi3-tiny" ? Fixtures.SynthExport(model, seed: 3)
            : bits == 0 ? Fixtures.Stories(Lowering.Ort) : QuantizedStories(bits);
        var options = new DecoderSessionOptions { MaxLength = 96 };
        using var fused = new DecoderSession(folder, options);
        using var asExported = new DecoderSession(folder, options with { Providers = FusionOff });
        Assert.That(fused.Model.NativeKernels.FusedNodes, Is.EqualTo(fusedNodes), fused.Model.NativeKernels.ToString());
        Assert.That(asExported.Model.NativeKernels.Active, Is.False);
        long[] prompt = [1, 403, 407, 261, 378, 426, 271, 297, 388, 285, 306, 261, 400];
        float[] a = fused.Append(prompt, prompt.Length, []).ToArray(), b = asExported.Append(prompt, prompt.Length, []).ToArray();
        double worst = MaxAbsDifference(a, b);
        for (int step = 0; step < 64; step++)
        {
            long next = Runtime.Sampling.Sampler.ArgMax(a), expected = Runtime.Sampling.Sampler.ArgMax(b);
            Assert.That(next, Is.EqualTo(expected), $"greedy token at step {step}");
            a = fused.Step([next]).ToArray();
            b = asExported.Step([next]).ToArray();
            worst = Math.Max(worst, MaxAbsDifference(a, b));
        }
        TestContext.Out.WriteLine($"{model} {(bits == 0 ? "fp32" : $"int{bits}")}: logits max abs difference over 64 steps {worst:E2}");
        // Logits are O(10); float rounding differences carried through a few layers stay orders of magnitude below 1e-3.
        Assert.That(worst, Is.LessThan(1e-3));
    }

    private static string QuantizedStories(int bits)
    {
        string folder = Path.Combine(Fixtures.Root, $"stories260k-int{bits}-a4-fusion");
        lock (typeof(NativeFusionTests))
            if (!File.Exists(Path.Combine(folder, "model.onnx")))
                ModelFolderWriter.Export(Exporters.Tests.Stories260K.LegacyCheckpoint, Exporters.Tests.Stories260K.Tokenizer, folder,
                    new ExportOptions { Lowering = Lowering.Ort, Quantization = new QuantizationOptions { Bits = bits, AccuracyLevel = 4 } });
        return folder;
    }

    // ---- graphs ------------------------------------------------------------------------------------------------------

    //   qkv [B, S, (Hq + 2 Hkv) D] ─Split─ q ─RotaryEmbedding─ q_rotated; k ─RotaryEmbedding─ k_rotated; v
    private static ModelProto RotaryGraph(int heads, int kvHeads, int headSize, int rotaryDim, int interleaved, int positions)
    {
        int rotary = rotaryDim == 0 ? headSize : rotaryDim;
        var graph = new GraphProto { Name = "rotary" };
        graph.Input.Add(FloatInfo("qkv"));
        graph.Input.Add(new ValueInfoProto { Name = "position_ids", Type = TensorType(ElementType.Int64) });
        graph.Initializer.Add(Int64s("split_sizes", [heads * headSize, kvHeads * headSize, kvHeads * headSize]));
        graph.Initializer.Add(Floats("cos_cache", RandomFloats(positions * rotary / 2, seed: 1), positions, rotary / 2));
        graph.Initializer.Add(Floats("sin_cache", RandomFloats(positions * rotary / 2, seed: 2), positions, rotary / 2));
        graph.Node.Add(Node("Split", "", ["qkv", "split_sizes"], ["q", "k", "v"], Int("axis", -1)));
        foreach (var (input, output, count) in new[] { ("q", "q_rotated", heads), ("k", "k_rotated", kvHeads) })
        {
            var node = Node("RotaryEmbedding", GraphBuilder.MicrosoftDomain, [input, "position_ids", "cos_cache", "sin_cache"], [output],
                Int("interleaved", interleaved), Int("num_heads", count));
            if (rotaryDim != 0) node.Attribute.Add(Int("rotary_embedding_dim", rotaryDim));
            graph.Node.Add(node);
        }
        graph.Output.Add(FloatInfo("q_rotated"));
        graph.Output.Add(FloatInfo("k_rotated"));
        graph.Output.Add(FloatInfo("v"));
        return Model(graph);
    }

    //   x [.., 2F] ─Split─ gate ─Sigmoid─ s ─Mul(gate, s)─ silu ─Mul(silu, up)─ y   (or QuickGelu(gate) for the first two)
    private static ModelProto SiluGraph(int intermediate, int rank, bool quickGelu, bool sigmoidFirst)
    {
        var graph = new GraphProto { Name = "silu" };
        graph.Input.Add(new ValueInfoProto { Name = "x", Type = TensorType(ElementType.Float, rank) });
        graph.Initializer.Add(Int64s("split_sizes", [intermediate, intermediate]));
        graph.Node.Add(Node("Split", "", ["x", "split_sizes"], ["gate", "up"], Int("axis", -1)));
        if (quickGelu)
            graph.Node.Add(Node("QuickGelu", GraphBuilder.MicrosoftDomain, ["gate"], ["silu"],
                new AttributeProto { Name = "alpha", Type = AttributeType.Float, F = 1f }));
        else
        {
            graph.Node.Add(Node("Sigmoid", "", ["gate"], ["sigmoid"]));
            graph.Node.Add(Node("Mul", "", sigmoidFirst ? ["sigmoid", "gate"] : ["gate", "sigmoid"], ["silu"]));
        }
        graph.Node.Add(Node("Mul", "", sigmoidFirst ? ["up", "silu"] : ["silu", "up"], ["y"]));
        graph.Output.Add(FloatInfo("y"));
        return Model(graph);
    }

    private static ModelProto Model(GraphProto graph)
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "NativeFusionTests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = GraphBuilder.MicrosoftDomain, Version = 1 });
        return model;
    }

    private static NodeProto Split(GraphProto graph) => graph.Node.First(n => n.OpType == "Split");

    private static NodeProto Rotary(GraphProto graph, int which) => graph.Node.Where(n => n.OpType == "RotaryEmbedding").ElementAt(which);

    private static void SetAttribute(NodeProto node, string name, long value, NodeProto? alsoOn = null)
    {
        foreach (var target in alsoOn is null ? [node] : new[] { node, alsoOn })
        {
            if (target.Attribute.FirstOrDefault(a => a.Name == name) is { } old) target.Attribute.Remove(old);
            target.Attribute.Add(Int(name, value));
        }
    }

    private static void SetInt64s(GraphProto graph, string name, long[] values)
    {
        int at = graph.Initializer.Select(t => t.Name).ToList().IndexOf(name);
        graph.Initializer[at] = Int64s(name, values);
    }

    private static NodeProto Node(string opType, string domain, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Domain = domain, Name = "/" + opType + "_" + outputs[0] };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        return node;
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeType.Int, I = value };

    private static TypeProto TensorType(ElementType type, int? rank = null)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = (int)type };
        if (rank is { } r)
        {
            tensor.Shape = new TensorShapeProto();
            for (int i = 0; i < r; i++) tensor.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = $"d{i}" });
        }
        return new TypeProto { TensorType = tensor };
    }

    private static ValueInfoProto FloatInfo(string name) => new() { Name = name, Type = TensorType(ElementType.Float) };

    private static TensorProto Int64s(string name, long[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)ElementType.Int64 };
        tensor.Dims.Add(values.Length);
        tensor.Int64Data.AddRange(values);
        return tensor;
    }

    private static TensorProto Floats(string name, float[] values, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)ElementType.Float };
        tensor.Dims.AddRange(dims);
        tensor.FloatData.AddRange(values);
        return tensor;
    }

    private static float[] RandomFloats(int count, int seed, float scale = 2f)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() - 0.5) * scale)];
    }

    private static ModelProto LoadModel(string folder) => ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(folder, "model.onnx")));

    // ---- running -----------------------------------------------------------------------------------------------------

    private static Dictionary<string, (float[], long[])> RotaryInputs(float[] qkv, long[] qkvShape, long[] positionIds, long[] positionShape) =>
        new() { ["qkv"] = (qkv, qkvShape), ["position_ids"] = ([.. positionIds.Select(p => (float)p)], positionShape) };

    private static Dictionary<string, (float[] Values, long[] Shape)> Run(ModelProto model, Dictionary<string, (float[], long[])> inputs) =>
        Run(model, inputs, ["position_ids"]);

    /// <summary>Runs <paramref name="model"/> on the CPU with our library registered; inputs named in
    /// <paramref name="int64Inputs"/> are passed as int64.</summary>
    private static Dictionary<string, (float[] Values, long[] Shape)> Run(ModelProto model, Dictionary<string, (float[], long[])> inputs,
        string[] int64Inputs)
    {
        using var options = new SessionOptions();
        NativeKernels.Register(options);
        using var session = new InferenceSession(model.ToByteArray(), options);
        var feeds = inputs.Select(kv =>
        {
            var (values, shape) = kv.Value;
            int[] dims = [.. shape.Select(d => (int)d)];
            return int64Inputs.Contains(kv.Key)
                ? NamedOnnxValue.CreateFromTensor(kv.Key, new DenseTensor<long>(values.Select(v => (long)v).ToArray(), dims))
                : NamedOnnxValue.CreateFromTensor(kv.Key, new DenseTensor<float>(values, dims));
        }).ToList();
        using var results = session.Run(feeds);
        return results.ToDictionary(r => r.Name, r =>
        {
            var tensor = r.AsTensor<float>();
            return (tensor.ToArray(), tensor.Dimensions.ToArray().Select(d => (long)d).ToArray());
        });
    }

    private static double MaxAbsDifference(float[] a, float[] b) =>
        a.Length == b.Length ? a.Zip(b, (x, y) => Math.Abs((double)x - y)).DefaultIfEmpty(0).Max() : double.PositiveInfinity;
}
