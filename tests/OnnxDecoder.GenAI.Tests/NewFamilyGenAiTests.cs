using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime;
using OnnxDecoder.Tests.Shared;
using OrtGenAI = Microsoft.ML.OnnxRuntimeGenAI;

namespace OnnxDecoder.GenAI.Tests;

/// <summary>The new families' ort exports (synth presets in Hugging Face layout) load in onnxruntime-genai
/// 0.18.0 under their own model type, and its greedy tokens equal ours.</summary>
[Parallelizable(ParallelScope.None)]
public class NewFamilyGenAiTests
{
    private string _root = "";

    [OneTimeSetUp] public void SetUp() => _root = TestPaths.NewTempFolder("genai-families");
    [OneTimeTearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    // phi3-tiny's 100 tokens cross its original_max_position_embeddings (64): both runtimes keep decoding incrementally.
    [TestCase("qwen3-tiny")]
    [TestCase("phi3-tiny")]
    [TestCase("gemma2-tiny")]
    [TestCase("gemma3-tiny")]
    [TestCase("granite-tiny")]
    [TestCase("smollm3-tiny")]
    [TestCase("phi2-tiny")]
    [TestCase("gemma-tiny")]
    public void GenAI_greedy_tokens_equal_ours(string preset)
    {
        string checkpoint = Path.Combine(_root, preset), folder = Path.Combine(_root, preset + "-ort");
        SynthPresets.Write(preset, seed: 1, checkpoint);
        ModelFolderWriter.Export(checkpoint, null, folder, new ExportOptions { Lowering = Lowering.Ort });
        int[] promptIds = [511, 17, 230, 45, 99];
        const int maxLength = 100;

        using var model = new OrtGenAI.Model(folder);
        using var parameters = new OrtGenAI.GeneratorParams(model);
        parameters.SetSearchOption("max_length", maxLength);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new OrtGenAI.Generator(model, parameters);
        generator.AppendTokens(promptIds);
        while (!generator.IsDone()) generator.GenerateNextToken();
        // The sequence after the prompt: GenAI does not append the EOS that ends it, and neither do we.
        var theirs = generator.GetSequence(0).ToArray()[promptIds.Length..];

        using var session = new DecoderSession(folder);
        var ours = new Generator(session, Runtime.Tokenization.TextTokenizer.Load(folder, session.Folder.BosTokenId))
            .Generate(promptIds, new GenerationOptions { MaxNewTokens = maxLength - promptIds.Length }).TokenIds;

        Assert.That(theirs, Is.Not.Empty, "GenAI generated tokens");
        if (SynthPresets.Get(preset).SlidingWindow is { } window)
            Assert.That(promptIds.Length + ours.Length, Is.GreaterThan(window), "the run crosses the sliding window");
        Assert.That(theirs, Is.EqualTo(ours));
    }

    /// <summary>Exports of model types onnxruntime-genai 0.18.0 does not know are refused by it, naming the type
    /// (the README's families table says which); our runtime loads the same folder.</summary>
    [TestCase("olmo2-tiny", "olmo2")]
    [TestCase("qwen3-moe-tiny", "qwen3_moe")]
    [TestCase("gpt-oss-tiny", "gpt_oss")]
    [TestCase("starcoder2-tiny", "starcoder2")]
    public void GenAI_refuses_a_model_type_it_does_not_know(string preset, string modelType)
    {
        string checkpoint = Path.Combine(_root, preset), folder = Path.Combine(_root, preset + "-ort");
        SynthPresets.Write(preset, seed: 1, checkpoint);
        ModelFolderWriter.Export(checkpoint, null, folder, new ExportOptions { Lowering = Lowering.Ort });
        var error = Assert.Throws<OrtGenAI.OnnxRuntimeGenAIException>(() => new OrtGenAI.Model(folder).Dispose())!;
        Assert.That(error.Message, Does.Contain($"Unsupported model_type in config.json: {modelType}"));
        using var session = new DecoderSession(folder);
        var tokens = new Generator(session, Runtime.Tokenization.TextTokenizer.Load(folder, session.Folder.BosTokenId))
            .Generate([511, 17, 230], new GenerationOptions { MaxNewTokens = 8 }).TokenIds;
        Assert.That(tokens, Has.Length.EqualTo(8));
    }
}
