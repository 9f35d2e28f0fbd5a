using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Onnx;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// Embeddings of a synth Qwen3 checkpoint exported with --hidden-states: each input's embedding equals the
/// pooling, computed here, of the Hugging Face reference's final-normed hidden states of that input run alone,
/// L2-normalised; a left-padded batch of 16 inputs of different lengths equals the inputs one by one.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class EmbeddingRunnerTests
{
    private string _root = "";
    private string _configJson = "";
    private InMemoryWeights _weights = new();

    [OneTimeSetUp]
    public void OneTimeSetUp()
    {
        _root = TestPaths.NewTempFolder("embeddings");
        string checkpoint = Path.Combine(_root, "qwen3-tiny");
        SynthPresets.Write("qwen3-tiny", seed: 13, checkpoint);
        _configJson = File.ReadAllText(Path.Combine(checkpoint, "config.json"));
        using var opened = Checkpoint.Open(checkpoint);
        foreach (var name in opened.Weights.Names)
        {
            var source = opened.Weights.Get(name);
            _weights.Add(name, TensorTransforms.ReadFloats(source), [.. source.Shape]);
        }
    }

    [OneTimeTearDown] public void OneTimeTearDown() => Directory.Delete(_root, recursive: true);

    private string Export(Lowering lowering, EmbeddingPooling pooling, bool hiddenStates = true)
    {
        string folder = Path.Combine(_root, $"export-{lowering}-{pooling}-{hiddenStates}");
        if (!Directory.Exists(folder))
            ModelFolderWriter.Export(Path.Combine(_root, "qwen3-tiny"), null, folder,
                new ExportOptions { Lowering = lowering, HiddenStatesOutput = hiddenStates, Pooling = pooling });
        return folder;
    }

    /// <summary>16 inputs of lengths 1 to 46, none of them the same length as the one before.</summary>
    private static List<IReadOnlyList<int>> Inputs(int vocab)
    {
        var random = new Random(17);
        return Enumerable.Range(0, 16).Select(i => (IReadOnlyList<int>)Enumerable.Range(0, 1 + (i * 7) % 46).Select(_ => random.Next(vocab)).ToArray()).ToList();
    }

    /// <summary>The reference embedding: the input alone through HfReference, pooled and L2-normalised here.</summary>
    private float[] ReferenceEmbedding(IReadOnlyList<int> tokens, string pooling)
    {
        var spec = HfSpec.Parse(_configJson);
        int length = tokens.Count, hidden = spec.HiddenSize;
        long[,] ids = new long[1, length], mask = new long[1, length], positions = new long[1, length];
        for (int t = 0; t < length; t++) (ids[0, t], mask[0, t], positions[0, t]) = (tokens[t], 1, t);
        var reference = new HfReference(spec, _weights);
        reference.Forward(ids, mask, positions);
        var states = reference.HiddenStates;                                                  // [1, S, hidden]
        var pooled = new double[hidden];
        for (int h = 0; h < hidden; h++)
            pooled[h] = pooling switch
            {
                "last" => states[(length - 1) * hidden + h],
                "cls" => states[h],
                _ => Enumerable.Range(0, length).Average(t => states[t * hidden + h]),
            };
        double norm = Math.Sqrt(pooled.Sum(v => v * v));
        return pooled.Select(v => (float)(v / norm)).ToArray();
    }

    private static float MaxDifference(float[] a, float[] b)
    {
        Assert.That(a, Has.Length.EqualTo(b.Length));
        return a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
    }

    [TestCase(Lowering.Portable, EmbeddingPooling.Last)]
    [TestCase(Lowering.Ort, EmbeddingPooling.Last)]
    [TestCase(Lowering.Portable, EmbeddingPooling.Mean)]
    [TestCase(Lowering.Ort, EmbeddingPooling.Mean)]
    [TestCase(Lowering.Portable, EmbeddingPooling.Cls)]
    [TestCase(Lowering.Ort, EmbeddingPooling.Cls)]
    public void A_batch_of_16_equals_the_reference_and_the_inputs_one_by_one(Lowering lowering, EmbeddingPooling pooling)
    {
        using var model = new DecoderModel(Export(lowering, pooling));
        var runner = new EmbeddingRunner(model);
        Assert.That(runner.Pooling, Is.EqualTo(pooling.ToString().ToLowerInvariant()));
        Assert.That(runner.Normalize, Is.True);
        var inputs = Inputs(model.Folder.VocabSize);

        long live = OrtValueLedger.Live;
        var batched = runner.Embed(inputs);
        Assert.That(OrtValueLedger.Live, Is.EqualTo(live), "every OrtValue of the run is released");
        Assert.That(batched, Has.Length.EqualTo(16));

        float worstReference = 0, worstAlone = 0;
        for (int i = 0; i < inputs.Count; i++)
        {
            Assert.That(batched[i], Has.Length.EqualTo(model.Folder.HiddenSize));
            worstReference = Math.Max(worstReference, MaxDifference(batched[i], ReferenceEmbedding(inputs[i], runner.Pooling)));
            worstAlone = Math.Max(worstAlone, MaxDifference(batched[i], runner.Embed([inputs[i]])[0]));
        }
        TestContext.Out.WriteLine($"{lowering} {pooling}: max |batched - reference| = {worstReference:G3}, max |batched - alone| = {worstAlone:G3}");
        Assert.That(worstReference, Is.LessThan(1e-4f), "batched vs the reference");
        Assert.That(worstAlone, Is.LessThan(1e-4f), "batched vs one by one");
        // Different inputs give different embeddings (the check above is not passed by a constant).
        Assert.That(MaxDifference(batched[3], batched[4]), Is.GreaterThan(1e-2f));
    }

    [Test]
    public void Batches_larger_than_the_runner_batch_are_split_and_agree()
    {
        using var model = new DecoderModel(Export(Lowering.Ort, EmbeddingPooling.Last));
        var inputs = Inputs(model.Folder.VocabSize);
        var whole = new EmbeddingRunner(model).Embed(inputs);
        var split = new EmbeddingRunner(model, maxBatchSize: 5).Embed(inputs);
        for (int i = 0; i < inputs.Count; i++) Assert.That(MaxDifference(whole[i], split[i]), Is.LessThan(1e-5f), $"input {i}");
    }

    [Test]
    public void A_model_without_hidden_states_and_bad_inputs_are_refused_with_the_fix()
    {
        using (var plain = new DecoderModel(Export(Lowering.Ort, EmbeddingPooling.Last, hiddenStates: false)))
        {
            Assert.That(EmbeddingRunner.Supports(plain), Is.False);
            var error = Assert.Throws<ModelFormatException>(() => new EmbeddingRunner(plain))!;
            Assert.That(error.Message, Does.Contain("--hidden-states"));
        }
        using var model = new DecoderModel(Export(Lowering.Ort, EmbeddingPooling.Last));
        var runner = new EmbeddingRunner(model);
        Assert.That(Assert.Throws<ArgumentException>(() => runner.Embed([Array.Empty<int>()]))!.Message, Does.Contain("input 0 has no tokens"));
        Assert.That(Assert.Throws<ArgumentException>(() => runner.Embed([new[] { 1 }, new[] { model.Folder.VocabSize }]))!.Message,
            Does.Contain("input 1: token id 512 is outside the vocabulary"));
        Assert.That(Assert.Throws<ArgumentException>(() => runner.Embed([new int[model.Folder.ContextLength + 1]]))!.Message, Does.Contain("context length"));
    }

    [Test]
    public void The_export_verb_takes_pooling_from_the_flag_or_the_sentence_transformers_config()
    {
        string checkpoint = Path.Combine(_root, "qwen3-tiny-st");
        SynthPresets.Write("qwen3-tiny", seed: 13, checkpoint);
        Directory.CreateDirectory(Path.Combine(checkpoint, "1_Pooling"));
        File.WriteAllText(Path.Combine(checkpoint, "1_Pooling", "config.json"),
            """{"word_embedding_dimension": 64, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false, "pooling_mode_lasttoken": false}""");

        string Pooling(params string[] extra)
        {
            string folder = Path.Combine(_root, "cli-" + Guid.NewGuid().ToString("N"));
            var run = OnnxDecoderCli.Run(["export", "--checkpoint", checkpoint, "--out", folder, "--hidden-states", .. extra]);
            Assert.That(run.ExitCode, Is.EqualTo(0), run.Stderr);
            using var model = new DecoderModel(folder);
            return new EmbeddingRunner(model).Pooling;
        }
        Assert.That(Pooling(), Is.EqualTo("cls"), "1_Pooling/config.json");
        Assert.That(Pooling("--pooling", "mean", "--lowering", "portable"), Is.EqualTo("mean"), "the flag wins");

        File.WriteAllText(Path.Combine(checkpoint, "1_Pooling", "config.json"), """{"pooling_mode_max_tokens": true}""");
        var refused = OnnxDecoderCli.Run("export", "--checkpoint", checkpoint, "--out", Path.Combine(_root, "cli-refused"), "--hidden-states");
        Assert.That(refused.ExitCode, Is.EqualTo(1));
        Assert.That(refused.Stderr, Does.Contain("1_Pooling").And.Contain("pass --pooling last|mean|cls"));
        var bad = OnnxDecoderCli.Run("export", "--checkpoint", checkpoint, "--out", Path.Combine(_root, "cli-bad"), "--hidden-states", "--pooling", "max");
        Assert.That(bad.ExitCode, Is.EqualTo(1));
        Assert.That(bad.Stderr.Trim(), Is.EqualTo("onnx-decoder: --pooling 'max' is not known: use last, mean or cls"));
    }
}
