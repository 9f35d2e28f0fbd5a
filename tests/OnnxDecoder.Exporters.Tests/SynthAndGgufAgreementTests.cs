using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>Synth checkpoints (safetensors) and GGUF files written from the same weights export to the
/// reference forward pass's logits, read position by position through the runtime's KV cache.</summary>
[Parallelizable(ParallelScope.None)]
public class SynthAndGgufAgreementTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("agreement");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    private static InMemoryWeights ReadAll(Checkpoint checkpoint)
    {
        var weights = new InMemoryWeights();
        foreach (var name in checkpoint.Weights.Names)
        {
            var source = checkpoint.Weights.Get(name);
            weights.Add(name, Modeling.TensorTransforms.ReadFloats(source), [.. source.Shape]);
        }
        return weights;
    }

    /// <summary>Max |our logits - reference logits| over every position of a 12-token sequence.</summary>
    private static float MaxDifference(string modelFolder, DecoderConfig referenceConfig, InMemoryWeights referenceWeights)
    {
        const int length = 12;
        var ids = new long[1, length];
        var random = new Random(3);
        for (int t = 0; t < length; t++) ids[0, t] = random.Next(referenceConfig.VocabSize);
        var positions = new long[1, length];
        var mask = new long[1, length];
        for (int t = 0; t < length; t++) { positions[0, t] = t; mask[0, t] = 1; }
        var expected = new ReferenceDecoder(referenceConfig, referenceWeights).Forward(ids, mask, positions);

        return StepwiseLogits.MaxDifference(modelFolder, ids, expected, referenceConfig.VocabSize);
    }

    private string Export(string checkpointPath, Lowering lowering, out Checkpoint checkpoint)
    {
        string folder = Path.Combine(_root, $"model-{Path.GetFileNameWithoutExtension(checkpointPath)}-{lowering}");
        checkpoint = Checkpoint.Open(checkpointPath);
        ModelFolderWriter.Write(folder, checkpoint, new ExportOptions { Lowering = lowering });
        return folder;
    }

    [TestCase("llama-tiny", Lowering.Portable)]
    [TestCase("llama-tiny", Lowering.Ort)]
    [TestCase("mixtral-tiny", Lowering.Portable)]
    [TestCase("mixtral-tiny", Lowering.Ort)]
    [TestCase("gpt2-tiny", Lowering.Ort)]
    public void Synth_safetensors_export_matches_the_reference(string preset, Lowering lowering)
    {
        string synth = Path.Combine(_root, preset);
        SynthPresets.Write(preset, seed: 5, synth);
        string folder = Export(synth, lowering, out var checkpoint);
        using (checkpoint)
        {
            Assert.That(MaxDifference(folder, checkpoint.Config, ReadAll(checkpoint)), Is.LessThan(1e-4f));
        }
    }

    [TestCase("llama-tiny", false, 1e-4f)]
    [TestCase("mixtral-tiny", false, 1e-4f)]
    // Q8_0 stores each weight to 1/254 of its block's largest magnitude; through two layers that moves
    // these logits (magnitudes around 1 to 5) by a few hundredths. The bound is 0.1.
    [TestCase("llama-tiny", true, 0.1f)]
    [TestCase("mixtral-tiny", true, 0.1f)]
    public void A_gguf_written_from_the_same_weights_exports_to_the_same_logits(string preset, bool q8, float tolerance)
    {
        string synth = Path.Combine(_root, preset);
        SynthPresets.Write(preset, seed: 9, synth);
        using var hf = Checkpoint.Open(synth);
        var weights = ReadAll(hf);
        string gguf = Path.Combine(_root, $"{preset}{(q8 ? "-q8_0" : "-f32")}.gguf");
        GgufTestWriter.Write(gguf, hf.Config, weights, q8);

        string folder = Export(gguf, Lowering.Ort, out var checkpoint);
        using (checkpoint)
        {
            Assert.That(checkpoint.Config.RotaryLayout, Is.EqualTo(RotaryLayout.Interleaved));
            Assert.That(checkpoint.StoredDTypes.Values, q8 ? Does.Contain("Q8_0") : Has.All.EqualTo("F32"));
            float difference = MaxDifference(folder, hf.Config, weights);
            Assert.That(difference, Is.LessThan(tolerance));
            TestContext.Out.WriteLine($"{preset} {(q8 ? "Q8_0" : "F32")}: max |logit difference| = {difference:G3}");
        }
    }

    [Test]
    public void Synth_is_reproducible_and_its_tokenizer_covers_the_vocabulary()
    {
        string a = Path.Combine(_root, "a"), b = Path.Combine(_root, "b");
        SynthPresets.Write("llama-tiny", 3, a);
        SynthPresets.Write("llama-tiny", 3, b);
        foreach (var file in new[] { "config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json" })
            Assert.That(File.ReadAllBytes(Path.Combine(b, file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(a, file))), file);
        using var vocab = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(a, "vocab.json")));
        var ids = vocab.RootElement.EnumerateObject().Select(p => p.Value.GetInt32()).Order().ToList();
        Assert.That(ids, Is.EqualTo(Enumerable.Range(0, 512)), "ids 0..511, one per vocabulary entry");
        var tokenizer = Runtime.Tokenization.TextTokenizer.Load(a, bosTokenId: 511);
        var encoded = tokenizer.Encode("Once upon a time, 42 dragons!", addBos: false);
        Assert.That(encoded, Has.All.LessThan(511));
        Assert.That(tokenizer.Decode(encoded), Is.EqualTo("Once upon a time, 42 dragons!"));
    }

    [Test]
    public void A_hugging_face_folders_chat_template_travels_into_the_model_folder()
    {
        string checkpoint = Path.Combine(_root, "templated-hf"), exported = Path.Combine(_root, "templated-export");
        SynthPresets.Write("llama-tiny", 3, checkpoint);
        const string template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
        File.WriteAllText(Path.Combine(checkpoint, "chat_template.jinja"), template);
        ModelFolderWriter.Export(checkpoint, null, exported, new ExportOptions { Lowering = Lowering.Ort });
        Assert.That(File.ReadAllText(Path.Combine(exported, "chat_template.jinja")), Is.EqualTo(template));
        Assert.That(File.Exists(Path.Combine(exported, "tokenizer_config.json")), Is.True);
        var prompt = Runtime.Tokenization.Jinja.ModelChatTemplate.TryLoad(exported)!
            .Render(new System.Text.Json.Nodes.JsonArray(new System.Text.Json.Nodes.JsonObject { ["role"] = "user", ["content"] = "hi" }), null, true);
        Assert.That(prompt, Is.EqualTo("user: hi\n"));
    }

    [Test]
    public void Synth_presets_have_the_documented_sizes()
    {
        var llama110m = SynthPresets.Get("llama-110m");
        Assert.That((llama110m.HiddenSize, llama110m.NumLayers, llama110m.NumHeads, llama110m.VocabSize, llama110m.IntermediateSize), Is.EqualTo((768, 12, 12, 32000, 2048)));
        long Parameters(string preset)
        {
            var c = SynthPresets.Get(preset);
            return Modeling.Families.FamilyRegistry.For(c).ExpectedWeights(c).Sum(s => s.Shape.Aggregate(1L, (x, y) => x * y));
        }
        Assert.That(Parameters("llama-110m"), Is.InRange(100_000_000, 120_000_000));
        Assert.That(Parameters("mixtral-small"), Is.InRange(180_000_000, 220_000_000));
        Assert.That((SynthPresets.Get("mixtral-tiny").NumExperts, SynthPresets.Get("mixtral-tiny").ExpertsPerToken), Is.EqualTo((8, 2)));
    }
}
