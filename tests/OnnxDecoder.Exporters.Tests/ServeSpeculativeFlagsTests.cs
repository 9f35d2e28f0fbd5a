using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>`serve --speculative ngram|MODEL_DIR [--draft-tokens K]`: a drafter folder that is not there, or a k
/// out of range, fails before the server starts, in one line that names it.</summary>
public class ServeSpeculativeFlagsTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("serve-speculative");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    [TestCase("/nowhere/draft", "3", "onnx-decoder: /nowhere/draft: model folder not found")]
    [TestCase("ngram", "0", "onnx-decoder: --draft-tokens 0: draft 1 to 64 tokens per step")]
    public void Serve_refuses_a_bad_speculative_setting_in_one_line(string speculative, string draftTokens, string message)
    {
        string folder = Path.Combine(_root, "model");
        ModelFolderWriter.Export(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, folder, new OnnxDecoder.Modeling.ExportOptions());
        var (exitCode, _, stderr) = OnnxDecoderCli.Run("serve", "--model", folder, "--speculative", speculative, "--draft-tokens", draftTokens, "--port", "0");
        Assert.That(exitCode, Is.EqualTo(1));
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
        Assert.That(stderr, Does.StartWith(message));
    }
}
