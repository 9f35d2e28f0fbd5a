using Google.Protobuf;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// The runtime's form of an ort export: GroupQueryAttention's lengths and padding bias fed by the host instead of
/// computed from attention_mask in the graph. It must give the logits of the graph as exported, bit for bit, whatever
/// the layout (one row, left-padded rows, rows of their own lengths, prefill in chunks), and only graphs whose mask
/// nodes it recognises take that form.
/// </summary>
public class DirectLengthsTests
{
    private static readonly ExecutionProviderOptions AsExported = new() { DirectGqaLengths = false };

    [TestCase(false)]
    [TestCase(true)]
    public void An_ort_export_loads_with_host_fed_lengths_and_no_mask_input(bool float16)
    {
        using var model = new DecoderModel(Fixtures.Stories(Lowering.Ort, float16));
        Assert.That(model.DirectLengths, Is.True);
        var inputs = model.Session.InputMetadata;
        Assert.That(inputs.Keys, Does.Contain(GraphContract.DirectSeqlensK).And.Contain(GraphContract.DirectTotalSequenceLength)
            .And.Contain(GraphContract.DirectAttentionBias).And.Not.Contain(GraphContract.AttentionMask));
        Assert.That(inputs[GraphContract.DirectAttentionBias].ElementDataType,
            Is.EqualTo(float16 ? Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16 : Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float));
        using var exported = new DecoderModel(Fixtures.Stories(Lowering.Ort, float16), AsExported);
        Assert.That(exported.DirectLengths, Is.False);
        Assert.That(exported.Session.InputMetadata.Keys, Does.Contain(GraphContract.AttentionMask));
    }

    [Test]
    public void A_portable_export_runs_as_exported()
    {
        using var model = new DecoderModel(Fixtures.Stories(Lowering.Portable));
        Assert.That(model.DirectLengths, Is.False);
    }

    [Test]
    public void Inspect_says_how_the_runtime_loads_a_folder()
    {
        var form = System.Text.RegularExpressions.Regex.Match(Cli.Inspection.Describe(Fixtures.Stories(Lowering.Ort)),
            @"runtime form: GroupQueryAttention lengths and padding bias fed by the host \((\d+) -> (\d+) nodes");
        Assert.That(form.Success, Is.True);
        Assert.That(int.Parse(form.Groups[2].Value), Is.LessThanOrEqualTo(int.Parse(form.Groups[1].Value) - 12), "the mask nodes are gone");
        Assert.That(Cli.Inspection.Describe(Fixtures.Stories(Lowering.Portable)), Does.Contain("runtime form: as exported (the graph does not say"));
    }

    [TestCase(false, 0)]
    [TestCase(true, 0)]
    [TestCase(false, 5)]
    public void One_row_gets_the_logits_of_the_graph_as_exported(bool float16, int prefillChunk)
    {
        string folder = Fixtures.Stories(Lowering.Ort, float16);
        var options = new DecoderSessionOptions { MaxLength = 64, PrefillChunk = prefillChunk };
        using var direct = new DecoderSession(folder, options);
        using var exported = new DecoderSession(folder, options with { Providers = AsExported });
        Assert.That(direct.Model.DirectLengths && !exported.Model.DirectLengths, Is.True);
        long[] prompt = [1, 403, 407, 261, 378, 426, 271, 297, 388, 285, 306, 261, 400];
        AssertSameSteps(direct, exported, prompt, mask: [], steps: 24);
    }

    [Test]
    public void Left_padded_rows_get_the_logits_of_the_graph_as_exported()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        var options = new DecoderSessionOptions { BatchSize = 3, MaxLength = 64 };
        using var direct = new DecoderSession(folder, options);
        using var exported = new DecoderSession(folder, options with { Providers = AsExported });
        // [3, 9]: row 0 full, row 1 four pads, row 2 eight pads.
        long[] ids = [1, 403, 407, 261, 378, 426, 271, 297, 388, 0, 0, 0, 0, 1, 306, 261, 400, 285, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        long[] mask = [.. ids.Select(id => id == 0 ? 0L : 1L)];
        AssertSameSteps(direct, exported, ids, mask, steps: 16);
    }

    [Test]
    public void Batched_requests_of_their_own_lengths_decode_as_over_the_graph_as_exported()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        var tokenizer = TextTokenizer.Load(folder, 1);
        string[] prompts = ["Once upon a time", "The little dog was very happy because", "Lily", "One day, a big bird flew over the town and saw"];
        var options = new GenerationOptions { MaxNewTokens = 40 };
        int[][] alone;
        using (var exported = new DecoderSession(folder, new DecoderSessionOptions { Providers = AsExported }))
            alone = [.. prompts.Select(p => new Generator(exported, tokenizer).Generate(tokenizer.Encode(p, true), options).TokenIds.ToArray())];
        using var model = new DecoderModel(folder);
        Assert.That(model.DirectLengths, Is.True);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 3 });
        var together = prompts.Select(p => batcher.Submit(tokenizer.Encode(p, true), options)).ToArray();
        for (int i = 0; i < prompts.Length; i++)
            using (together[i])
                Assert.That(together[i].Completion.WaitAsync(TimeSpan.FromSeconds(60)).GetAwaiter().GetResult().TokenIds, Is.EqualTo(alone[i]), $"request {i}");
    }

    private static IEnumerable<string> TinyPresets => Exporters.Synth.SynthPresets.All.Keys.Where(k => k.EndsWith("-tiny", StringComparison.Ordinal)).Order(StringComparer.Ordinal);

    [TestCaseSource(nameof(TinyPresets))]
    public void Every_family_runs_with_host_fed_lengths_and_the_logits_of_the_graph_as_exported(string preset)
    {
        string folder = Fixtures.SynthExport(preset, seed: 5);
        var options = new DecoderSessionOptions { BatchSize = 2, MaxLength = 32 };
        using var direct = new DecoderSession(folder, options);
        using var exported = new DecoderSession(folder, options with { Providers = AsExported });
        Assert.That(direct.Model.DirectLengths, Is.True, "the family's ort export takes the runtime form");
        // [2, 7]: row 1 left padded by four.
        long[] ids = [3, 17, 250, 9, 101, 44, 7, 0, 0, 0, 0, 60, 5, 211];
        long[] mask = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1];
        AssertSameSteps(direct, exported, ids, mask, steps: 6);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void A_prompt_whose_bias_is_too_large_to_keep_gets_the_logits_of_the_graph_as_exported(bool leftPadded)
    {
        // 2,100 new tokens over 2,100 columns: a float32 bias of 17.6 MB a row, past what a step keeps between runs.
        string folder = Fixtures.SynthExport("llama-tiny", seed: 9, maxLength: 2112);
        int batch = leftPadded ? 2 : 1;
        const int length = 2100;
        var options = new DecoderSessionOptions { BatchSize = batch, MaxLength = 2112 };
        using var direct = new DecoderSession(folder, options);
        using var exported = new DecoderSession(folder, options with { Providers = AsExported });
        Assert.That(direct.Model.DirectLengths, Is.True);
        var random = new Random(4);
        long[] ids = [.. Enumerable.Range(0, batch * length).Select(_ => (long)random.Next(3, 500))];
        long[] mask = leftPadded ? [.. Enumerable.Range(0, batch * length).Select(i => i >= length && i < length + 700 ? 0L : 1L)] : [];
        AssertSameSteps(direct, exported, ids, mask, steps: 3);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Embeddings_of_a_left_padded_batch_equal_those_of_the_graph_as_exported(bool float16)
    {
        string folder = Path.Combine(Fixtures.Root, $"direct-embeddings{(float16 ? "-fp16" : "")}");
        if (!Directory.Exists(folder))
            Exporters.ModelFolderWriter.Export(Exporters.Tests.Stories260K.LegacyCheckpoint, Exporters.Tests.Stories260K.Tokenizer, folder,
                new ExportOptions { Lowering = Lowering.Ort, Float16 = float16, HiddenStatesOutput = true });
        using var direct = new DecoderModel(folder);
        using var exported = new DecoderModel(folder, AsExported);
        Assert.That(direct.DirectLengths && !exported.DirectLengths, Is.True);
        IReadOnlyList<int>[] inputs = [[1, 403, 407, 261, 378, 426, 271], [1, 306], [1, 400, 285, 297]];
        var a = new EmbeddingRunner(direct).Embed(inputs);
        var b = new EmbeddingRunner(exported).Embed(inputs);
        for (int i = 0; i < inputs.Length; i++) Assert.That(a[i], Is.EqualTo(b[i]), $"input {i}");
    }

    [TestCase("metadata")]
    [TestCase("padding value")]
    [TestCase("seqlens chain")]
    public void A_graph_whose_mask_nodes_differ_runs_as_exported(string change)
    {
        string source = Fixtures.Stories(Lowering.Ort);
        string folder = Path.Combine(Fixtures.Root, "direct-lengths-" + change.Replace(' ', '-'));
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        string path = Path.Combine(folder, "model.onnx");
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var where = proto.Graph.Node.Single(n => n.OpType == "Where" && n.Output[0].Contains("attn_mask", StringComparison.Ordinal));
        switch (change)
        {
            case "metadata":
                proto.MetadataProps.Remove(proto.MetadataProps.Single(p => p.Key == GraphContract.Metadata.GqaSeqlensK));
                break;
            case "padding value":
                // A bias of -1000 over padding is not what the host writes (the lowest float): the graph must keep its own.
                var constant = new TensorProto { Name = "other_padding", DataType = (int)ElementType.Float };
                constant.FloatData.Add(-1000f);
                proto.Graph.Initializer.Add(constant);
                where.Input[2] = "other_padding";
                break;
            case "seqlens chain":
                var reduce = proto.Graph.Node.Single(n => n.OpType == "ReduceMax");
                reduce.OpType = "ReduceMin";
                break;
        }
        File.WriteAllBytes(path, proto.ToByteArray());
        using var model = new DecoderModel(folder);
        Assert.That(model.DirectLengths, Is.False);
        Assert.That(model.Session.InputMetadata.Keys, Does.Contain(GraphContract.AttentionMask));
    }

    /// <summary>Appends <paramref name="ids"/> to both sessions, then greedy steps; every logit equal.</summary>
    private static void AssertSameSteps(DecoderSession direct, DecoderSession exported, long[] ids, long[] mask, int steps)
    {
        int batch = direct.BatchSize, length = ids.Length / batch, vocab = direct.VocabSize;
        float[] a = direct.Append(ids, length, mask).ToArray(), b = exported.Append(ids, length, mask).ToArray();
        Assert.That(a, Is.EqualTo(b), "prefill logits");
        var next = new long[batch];
        for (int step = 0; step < steps; step++)
        {
            for (int row = 0; row < batch; row++) next[row] = Runtime.Sampling.Sampler.ArgMax(a.AsSpan(row * vocab, vocab));
            a = direct.Step(next).ToArray();
            b = exported.Step(next).ToArray();
            Assert.That(a, Is.EqualTo(b), $"logits after step {step}");
        }
    }
}
