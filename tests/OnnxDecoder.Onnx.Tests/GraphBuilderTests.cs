using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Onnx.Tests;

public class GraphBuilderTests
{
    private string _folder = "";

    [SetUp] public void SetUp() => _folder = TestPaths.NewTempFolder();
    [TearDown] public void TearDown() => Directory.Delete(_folder, recursive: true);

    private const int Vocab = 7, Hidden = 4, Classes = 3;

    // A small "embed -> project -> softmax" graph:
    //   ids [batch, 2] --Gather(embedding [7, 4])--> [batch, 2, 4] --Reshape--> [batch, 8]
    //   --MatMul(w [8, 3])--> [batch, 3] --Softmax(axis -1)--> probs [batch, 3]
    private static (OnnxModel Model, float[] Embedding, float[] Projection) BuildEmbedProjectSoftmax()
    {
        var random = new Random(1234);
        float[] embedding = Enumerable.Range(0, Vocab * Hidden).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        float[] projection = Enumerable.Range(0, 2 * Hidden * Classes).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();

        var b = new GraphBuilder();
        var ids = b.Input("ids", ElementType.Int64, "batch_size", 2);
        var table = b.Initializer("embedding.weight", TensorData.From<float>(embedding, Vocab, Hidden));
        var weight = b.Initializer("proj.weight", TensorData.From<float>(projection, 2 * Hidden, Classes));
        Value probs;
        using (b.Scope("model"))
        {
            Value x;
            using (b.Scope("embed")) x = b.Op("Gather", [table, ids], Attr.Int("axis", 0));
            using (b.Scope("flatten")) x = b.Op("Reshape", [x, b.Int64s(-1, 2 * Hidden)]);
            using (b.Scope("proj")) x = b.Op("MatMul", [x, weight]);
            using (b.Scope("head")) probs = b.Op("Softmax", [x], Attr.Int("axis", -1));
        }
        b.Output(probs, "probs", ElementType.Float, "batch_size", Classes);
        return (b.Build(), embedding, projection);
    }

    private static float[] PlainReference(long[] ids, int batch, float[] embedding, float[] projection)
    {
        var result = new float[batch * Classes];
        for (int row = 0; row < batch; row++)
        {
            var flat = new float[2 * Hidden];
            for (int t = 0; t < 2; t++)
                for (int h = 0; h < Hidden; h++) flat[t * Hidden + h] = embedding[ids[row * 2 + t] * Hidden + h];
            var logits = new double[Classes];
            for (int c = 0; c < Classes; c++)
                for (int k = 0; k < 2 * Hidden; k++) logits[c] += flat[k] * projection[k * Classes + c];
            double max = logits.Max(), sum = logits.Sum(l => Math.Exp(l - max));
            for (int c = 0; c < Classes; c++) result[row * Classes + c] = (float)(Math.Exp(logits[c] - max) / sum);
        }
        return result;
    }

    [TestCase(1)]
    [TestCase(3)]
    public void Graph_with_symbolic_batch_runs_in_onnxruntime_and_matches_plain_computation(int batch)
    {
        var (model, embedding, projection) = BuildEmbedProjectSoftmax();
        string path = Path.Combine(_folder, "model.onnx");
        ModelWriter.Save(model, path, new ModelWriterOptions { ExternalDataThreshold = 64 });

        long[] ids = Enumerable.Range(0, batch * 2).Select(i => (long)((i * 5 + 1) % Vocab)).ToArray();
        using var session = new InferenceSession(path);
        using var input = OrtValue.CreateTensorValueFromMemory(ids, [batch, 2]);
        using var outputs = session.Run(new RunOptions(), ["ids"], [input], ["probs"]);
        float[] actual = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        float[] expected = PlainReference(ids, batch, embedding, projection);

        Assert.That(outputs[0].GetTensorTypeAndShape().Shape, Is.EqualTo(new long[] { batch, Classes }));
        Assert.That(actual, Is.EqualTo(expected).Within(1e-6f));
    }

    [Test]
    public void Saved_opset17_model_passes_python_onnx_full_check()
    {
        var (model, _, _) = BuildEmbedProjectSoftmax();
        string path = Path.Combine(_folder, "model.onnx");
        ModelWriter.Save(model, path, new ModelWriterOptions { ExternalDataThreshold = 64 });
        Assert.That(File.Exists(path + ".data"), "the projection weight should have gone to external data");

        var (exit, output) = PythonOnnx.FullCheck(path);
        Assert.That(exit, Is.Zero, output);
        Assert.That(output, Does.Contain("ok"));
    }

    [Test]
    public void Python_checker_rejects_a_model_with_a_wrong_attribute_type_so_the_check_above_can_fail()
    {
        // Written without our checker, to show the independent judge really judges.
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 2, 3);
        var y = b.Op("Softmax", [x], Attr.Float("axis", 1.5f));
        b.Output(y, "y", ElementType.Float, 2, 3);
        string path = Path.Combine(_folder, "bad.onnx");
        ModelWriter.Save(b.Build(), path, new ModelWriterOptions { Check = false });

        var (exit, _) = PythonOnnx.FullCheck(path);
        Assert.That(exit, Is.Not.Zero);
    }

    [Test]
    public void Node_names_follow_scopes_and_outputs_are_named_after_their_node()
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, "batch_size", 4);
        var w = b.Initializer("w", TensorData.From<float>(new float[16], 4, 4));
        Value first, second;
        using (b.Scope("model"))
        using (b.Scope("layers.0"))
        using (b.Scope("attn"))
        using (b.Scope("q_proj"))
        {
            first = b.Op("MatMul", [x, w]);
            second = b.Op("MatMul", [first, w]);
        }
        b.Output(second, "y", ElementType.Float, "batch_size", 4);
        var graph = b.Build().ToModelProto().Graph;

        Assert.That(graph.Node.Select(n => n.Name), Is.EqualTo(new[] { "/model/layers.0/attn/q_proj/MatMul", "/model/layers.0/attn/q_proj/MatMul_1" }));
        Assert.That(first.Name, Is.EqualTo("/model/layers.0/attn/q_proj/MatMul/output_0"));
        Assert.That(graph.Node[1].Output[0], Is.EqualTo("y"), "a graph output takes its contract name directly");
    }

    [Test]
    public void Equal_constants_are_shared_and_different_ones_are_not()
    {
        var b = new GraphBuilder();
        var a1 = b.Int64s(0, -1);
        var a2 = b.Int64s(0, -1);
        var other = b.Int64s(-1, 0);
        var scalar = b.FloatScalar(1f);
        Assert.That(a2, Is.SameAs(a1));
        Assert.That(other, Is.Not.SameAs(a1));
        Assert.That(a1.Name, Is.EqualTo("/model/constants/INT64/1D/0_-1"));
        Assert.That(scalar.Name, Is.EqualTo("/model/constants/FLOAT/0D/1"));
    }

    [Test]
    public void Opset_imports_are_collected_from_the_domains_used()
    {
        var plain = new GraphBuilder();
        var x = plain.Input("x", ElementType.Float, 2);
        plain.Output(plain.Op("Neg", [x]), "y", ElementType.Float, 2);
        var plainModel = plain.Build().ToModelProto();
        Assert.That(plainModel.OpsetImport.Select(o => (o.Domain, o.Version)), Is.EqualTo(new[] { ("", 17L) }));
        Assert.That(plainModel.IrVersion, Is.EqualTo(8));

        var fused = new GraphBuilder(defaultOpset: 21);
        var y = fused.Input("x", ElementType.Float, 2, 4);
        var scale = fused.Initializer("scale", TensorData.From<float>(new float[] { 1, 1, 1, 1 }, 4));
        fused.Output(fused.MsOp("SimplifiedLayerNormalization", [y, scale], Attr.Float("epsilon", 1e-5f)), "z", ElementType.Float, 2, 4);
        var fusedModel = fused.Build().ToModelProto();
        Assert.That(fusedModel.OpsetImport.Select(o => (o.Domain, o.Version)), Is.EqualTo(new[] { ("", 21L), ("com.microsoft", 1L) }));
        Assert.That(fusedModel.IrVersion, Is.EqualTo(10));
    }

    [Test]
    public void Four_bit_initializers_raise_the_ir_version()
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 2);
        b.Initializer("packed", TensorData.FromBytes(ElementType.UInt4, new byte[2], 4));
        b.Output(b.Op("Neg", [x]), "y", ElementType.Float, 2);
        Assert.That(b.Build().IrVersion, Is.EqualTo(10));
    }

    [Test]
    public void Metadata_props_are_written_in_order_and_a_key_set_twice_keeps_the_last_value()
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 2);
        b.Output(b.Op("Neg", [x]), "y", ElementType.Float, 2);
        b.Metadata("family", "llama");
        b.Metadata("lowering", "portable");
        b.Metadata("family", "mistral");
        var props = b.Build().ToModelProto().MetadataProps.Select(p => (p.Key, p.Value));
        Assert.That(props, Is.EqualTo(new[] { ("lowering", "portable"), ("family", "mistral") }));
    }

    [Test]
    public void A_graph_input_declared_as_output_passes_through_identity()
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 2);
        b.Output(x, "x_copy", ElementType.Float, 2);
        var graph = b.Build().ToModelProto().Graph;
        Assert.That(graph.Node.Single().OpType, Is.EqualTo("Identity"));
        Assert.That(graph.Node.Single().Output.Single(), Is.EqualTo("x_copy"));
        Assert.That(ModelChecker.Check(graph.ToModel()), Is.Empty);
    }

    [Test]
    public void Builder_refuses_reuse_after_build_duplicate_values_and_unbalanced_scopes()
    {
        var b = new GraphBuilder();
        b.Input("x", ElementType.Float, 2);
        Assert.That(() => b.Input("x", ElementType.Float, 2), Throws.ArgumentException.With.Message.Contains("'x' is already used"));
        var outer = b.Scope("outer");
        var inner = b.Scope("inner");
        Assert.That(() => outer.Dispose(), Throws.InvalidOperationException);
        inner.Dispose();
        Assert.That(() => b.Build(), Throws.InvalidOperationException.With.Message.Contains("/outer"));
        outer.Dispose();
        b.Build();
        Assert.That(() => b.Input("y", ElementType.Float, 2), Throws.InvalidOperationException);
    }
}

internal static class GraphProtoExtensions
{
    public static ModelProto ToModel(this GraphProto graph)
    {
        var model = new ModelProto { IrVersion = 8, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return model;
    }
}
