using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

public class ProfilingTests
{
    [Test]
    public void ProfileFilePrefix_puts_the_profile_there_with_one_model_run_per_run()
    {
        string folder = TestPaths.NewTempFolder("profile");
        try
        {
            string prefix = Path.Combine(folder, "decode");
            using (var session = new DecoderSession(Fixtures.Stories(Lowering.Ort), new DecoderSessionOptions
            {
                MaxLength = 16,
                Providers = new ExecutionProviderOptions { IntraOpThreads = 1, ProfileFilePrefix = prefix },
            }))
            {
                session.Append([1, 403, 407], 3);
                for (int i = 0; i < 4; i++) session.Step([261]);
            }
            // ONNX Runtime writes the profile when the session ends.
            var files = Directory.GetFiles(folder, "decode*.json");
            Assert.That(files, Has.Length.EqualTo(1), "one profile, named by the prefix");
            using var document = JsonDocument.Parse(File.ReadAllText(files[0]));
            int runs = document.RootElement.EnumerateArray().Count(e => e.TryGetProperty("name", out var n) && n.GetString() == "model_run");
            Assert.That(runs, Is.EqualTo(5), "the prefill and four steps");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
