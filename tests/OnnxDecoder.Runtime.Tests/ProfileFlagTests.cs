using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>generate --profile PREFIX: ONNX Runtime's Chrome-trace profile lands where the prefix says.</summary>
[Parallelizable(ParallelScope.None)]
public class ProfileFlagTests
{
    [Test]
    public void Generate_with_a_profile_prefix_writes_the_trace_there_with_one_model_run_per_step()
    {
        string folder = Path.Combine(Fixtures.Root, "profile");
        Directory.CreateDirectory(folder);
        var run = OnnxDecoderCli.Run("generate", "--model", Fixtures.Stories(Lowering.Ort), "--prompt-ids", "1,403,407", "--max-tokens", "6",
            "--format", "json", "--profile", Path.Combine(folder, "trace"));
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Stderr);
        var files = Directory.GetFiles(folder, "trace*.json");
        Assert.That(files, Has.Length.EqualTo(1), "one trace, named by the prefix");
        using var trace = JsonDocument.Parse(File.ReadAllText(files[0]));
        int runs = trace.RootElement.EnumerateArray().Count(e => e.TryGetProperty("name", out var n) && n.GetString() == "model_run");
        Assert.That(runs, Is.EqualTo(6), "the prompt run and five decode steps (the sixth token is not run)");
    }
}
