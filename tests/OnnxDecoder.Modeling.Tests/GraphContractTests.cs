using Google.Protobuf;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Onnx;
using OnnxDecoder.Tests.Shared;
using static OnnxDecoder.Modeling.Tests.Inputs;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>The graph contract of DESIGN.md, GPT-2, the portable checker and the lowering table.</summary>
public class GraphContractTests
{
    private static DecoderConfig Gpt2Config => new()
    {
        ModelType = "gpt2", HiddenSize = 32, IntermediateSize = 128, NumLayers = 2, NumHeads = 4, NumKvHeads = 4, HeadDim = 8,
        VocabSize = 50, MaxPositions = 32, Norm = NormKind.LayerNorm, Positions = PositionKind.Learned, GatedMlp = false,
        HiddenAct = Activation.GeluTanh, TieWordEmbeddings = true, AttentionBias = true, ProjectionBias = true, BosTokenId = 49, EosTokenIds = [49],
    };

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Gpt2_with_fused_c_attn_and_conv1d_weights_matches_the_reference(Lowering lowering)
    {
        var config = Gpt2Config.Validate();
        var weights = TestConfigs.Weights(config);
        var ids = Tokens(2, 6, config.VocabSize, seed: 12);
        var expected = new ReferenceDecoder(config, weights).Forward(ids, Ones(2, 6), Positions(2, 0, 6));
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = lowering });
        Assert.That(MaxAbsDifference(decoder.Run(ids, Ones(2, 6), Positions(2, 0, 6)).Logits, expected), Is.LessThan(1e-4f));
    }

    [Test]
    public void Inputs_outputs_and_node_names_follow_the_contract()
    {
        var config = TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2 };
        var model = FamilyRegistry.For(config).Build(config, TestConfigs.Weights(config), new ExportOptions()).ToModelProto();
        var graph = model.Graph;
        string Dims(Onnx.Proto.ValueInfoProto v) => string.Join(",", v.Type.TensorType.Shape.Dim.Select(d => d.DimParam.Length > 0 ? d.DimParam : d.DimValue.ToString()));

        Assert.That(graph.Input.Select(i => $"{i.Name}[{Dims(i)}]"), Is.EqualTo(new[]
        {
            "input_ids[batch_size,sequence_length]", "attention_mask[batch_size,total_sequence_length]", "position_ids[batch_size,sequence_length]",
            "past_key_values.0.key[batch_size,2,past_sequence_length,8]", "past_key_values.0.value[batch_size,2,past_sequence_length,8]",
            "past_key_values.1.key[batch_size,2,past_sequence_length,8]", "past_key_values.1.value[batch_size,2,past_sequence_length,8]",
        }));
        Assert.That(graph.Output.Select(o => $"{o.Name}[{Dims(o)}]"), Is.EqualTo(new[]
        {
            "logits[batch_size,sequence_length,48]",
            "present.0.key[batch_size,2,total_sequence_length,8]", "present.0.value[batch_size,2,total_sequence_length,8]",
            "present.1.key[batch_size,2,total_sequence_length,8]", "present.1.value[batch_size,2,total_sequence_length,8]",
        }));
        var nodeNames = graph.Node.Select(n => n.Name).ToHashSet();
        Assert.That(nodeNames, Does.Contain("/model/layers.0/attn/q_proj/MatMul"));
        Assert.That(nodeNames, Does.Contain("/model/layers.1/moe/router/MatMul"));
        Assert.That(nodeNames, Does.Contain("/model/embed_tokens/Gather"));
        Assert.That(graph.Node.SelectMany(n => n.Output).Where(o => !o.StartsWith("present.") && o != "logits"), Has.All.Match("^/model/.*/output_\\d+$"));
        Assert.That(model.MetadataProps.ToDictionary(p => p.Key, p => p.Value)["onnxdecoder.family"], Is.EqualTo("mixtral"));
        Assert.That(model.IrVersion, Is.EqualTo(8));
        Assert.That(model.OpsetImport.Select(o => o.Domain), Is.EqualTo(new[] { "" }), "portable uses ai.onnx only");
    }

    [Test]
    public void The_ort_lowering_uses_the_fused_ops()
    {
        var config = TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2 };
        var ops = FamilyRegistry.For(config).Build(config, TestConfigs.Weights(config), new ExportOptions { Lowering = Lowering.Ort }).OpHistogram();
        Assert.That(ops.Keys, Is.SupersetOf(new[] { "com.microsoft.GroupQueryAttention", "com.microsoft.RotaryEmbedding", "SimplifiedLayerNormalization",
            "com.microsoft.SkipSimplifiedLayerNormalization", "com.microsoft.MoE" }));
        Assert.That(ops["com.microsoft.GroupQueryAttention"], Is.EqualTo(2));
        Assert.That(ops.ContainsKey("Softmax"), Is.False, "attention is fused");
    }

    [Test]
    public void Building_the_same_model_twice_gives_identical_bytes()
    {
        var config = TestConfigs.Base;
        byte[] Build() => FamilyRegistry.For(config).Build(config, TestConfigs.Weights(config, seed: 3), new ExportOptions { Lowering = Lowering.Ort }).ToModelProto().ToByteArray();
        Assert.That(Build(), Is.EqualTo(Build()));
    }

    [Test]
    public void Portable_exports_pass_python_onnx_full_check()
    {
        string folder = TestPaths.NewTempFolder();
        try
        {
            var configs = new[]
            {
                TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2, SlidingWindow = 4, RopeScaling = new RopeScaling { Type = RopeScalingType.Dynamic, Factor = 2 } },
                Gpt2Config,
                TestConfigs.Base with { RotaryLayout = RotaryLayout.Interleaved, PartialRotaryFactor = 0.5, AttentionBias = true, Norm = NormKind.LayerNorm, GatedMlp = false, HiddenAct = Activation.Gelu },
            };
            for (int i = 0; i < configs.Length; i++)
            {
                var config = configs[i].Validate();
                string path = Path.Combine(folder, $"m{i}", "model.onnx");
                ModelWriter.Save(FamilyRegistry.For(config).Build(config, TestConfigs.Weights(config), new ExportOptions { LastTokenLogitsOnly = i == 0, RouterLogitsOutputs = i == 0 }), path,
                    new ModelWriterOptions { ExternalDataThreshold = 4096 });
                var (exit, output) = PythonOnnx.FullCheck(path);
                Assert.That(exit, Is.Zero, $"{config}: {output}");
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void A_combination_that_cannot_run_is_refused_with_the_alternative_named()
    {
        var moe = TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 2 };
        var error = Assert.Throws<NotSupportedException>(() => FamilyRegistry.For(moe).Build(moe, TestConfigs.Weights(moe),
            new ExportOptions { Lowering = Lowering.Ort, Target = ExecutionTarget.DirectML }));
        Assert.That(error!.Message, Is.EqualTo("lowering 'ort' on DirectML: the com.microsoft MoE op has no DirectML kernel: export with --lowering portable for DirectML"));
        Assert.That(LoweringSupport.WhyNot(moe, Lowering.Portable, ExecutionTarget.DirectML), Is.Null);
        Assert.That(LoweringSupport.WhyNot(moe, Lowering.Ort, ExecutionTarget.Cuda), Is.Null);
    }

    [Test]
    public void Expected_weights_list_every_tensor_once_with_its_shape()
    {
        var config = TestConfigs.Base with { ModelType = "mixtral", NumExperts = 4, ExpertsPerToken = 1, AttentionBias = true };
        var specs = FamilyRegistry.For(config).ExpectedWeights(config);
        Assert.That(specs.Select(s => s.Name), Is.Unique);
        Assert.That(specs.Single(s => s.Name == "model.layers.1.block_sparse_moe.experts.3.w2.weight").Shape, Is.EqualTo(new long[] { 32, 40 }));
        Assert.That(specs.Single(s => s.Name == "model.layers.0.self_attn.k_proj.bias").Shape, Is.EqualTo(new long[] { 16 }));
        Assert.That(specs.Count, Is.EqualTo(3 + 2 * (2 + 4 + 3 + 1 + 4 * 3)), "embed, final norm, lm_head + per layer: 2 norms, q/k/v/o, 3 biases, router, 4 experts x 3");
    }
}
