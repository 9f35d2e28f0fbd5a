using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>stories260K exported from both llama2.c formats with both lowerings reproduces llama2.c's greedy run.</summary>
[Parallelizable(ParallelScope.None)]
public class Stories260KExportTests
{
    private static readonly Dictionary<string, string> Exports = new();
    private static string _root = "";

    [OneTimeSetUp]
    public void ExportAll()
    {
        _root = TestPaths.NewTempFolder("stories260k");
        foreach (var (name, path) in new[] { ("v0", Stories260K.LegacyCheckpoint), ("v1", Stories260K.Version1Checkpoint) })
            foreach (var lowering in new[] { Lowering.Portable, Lowering.Ort })
            {
                string folder = Path.Combine(_root, $"{name}-{lowering}");
                ModelFolderWriter.Export(path, Stories260K.Tokenizer, folder, new ExportOptions { Lowering = lowering });
                Exports[$"{name}-{lowering}"] = folder;
            }
    }

    [OneTimeTearDown]
    public void Cleanup() => Directory.Delete(_root, recursive: true);

    public static IEnumerable<string> Variants() => ["v0-Portable", "v0-Ort", "v1-Portable", "v1-Ort"];

    [TestCaseSource(nameof(Variants))]
    public void Greedy_generation_reproduces_llama2c_token_for_token_to_the_models_own_stop(string variant)
    {
        var (promptIds, goldenIds) = Stories260K.Golden();
        using var session = new DecoderSession(Exports[variant]);
        var tokenizer = TextTokenizer.Load(Exports[variant], session.Folder.BosTokenId);
        var generator = new Generator(session, tokenizer);

        Assert.That(tokenizer.Encode("Once upon a time", addBos: true), Is.EqualTo(promptIds), "the prompt encodes as llama2.c's");
        var result = generator.Generate(promptIds, new GenerationOptions { MaxNewTokens = 500, Sampling = new SamplingOptions { Temperature = 0 } });

        Assert.That(result.TokenIds, Is.EqualTo(goldenIds));
        Assert.That(result.StopReason, Is.EqualTo(StopReason.Eos), "it stops where llama2.c stops: on generating BOS (id 1)");
    }

    [TestCaseSource(nameof(Variants))]
    public void The_first_200_positions_decode_to_the_published_text(string variant)
    {
        var (promptIds, _) = Stories260K.Golden();
        using var session = new DecoderSession(Exports[variant]);
        var tokenizer = TextTokenizer.Load(Exports[variant], session.Folder.BosTokenId);
        // llama2.c's `-n 200` runs 200 forward passes (positions 0..199), each printing the token at
        // the next position: 200 tokens after BOS, of which 4 are the prompt and 196 are generated.
        const int forwardPasses = 200;
        var result = new Generator(session, tokenizer).Generate("Once upon a time", new GenerationOptions { MaxNewTokens = forwardPasses + 1 - promptIds.Length });

        Assert.That(result.StopReason, Is.EqualTo(StopReason.MaxTokens));
        Assert.That("Once upon a time" + result.Text, Is.EqualTo(Stories260K.GoldenText));
    }
}
