using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Packaging.Tests;

/// <summary>
/// The packages as a consumer gets them: the Release build is packed into a folder feed, and in a
/// fresh folder outside the repo (its NuGet.config names only that feed and the machine's normal
/// sources) a new tool manifest installs `onnx-decoder`, which synthesises and exports a model and
/// generates from it, and a new console app referencing OnnxDecoder.Hosting generates from the same
/// folder. Each run packs a version of its own, so NuGet's cache never serves an older build.
/// </summary>
public class PackageConsumerTests
{
    private static readonly string[] Packages = ["OnnxDecoder.Onnx", "OnnxDecoder.Modeling", "OnnxDecoder.Exporters", "OnnxDecoder.Runtime", "OnnxDecoder.Hosting", "OnnxDecoder.Server", "OnnxDecoder.Tool"];

    private static (int Exit, string Output) Run(string workingDirectory, string arguments, int timeoutSeconds = 300)
    {
        var start = new ProcessStartInfo("dotnet", arguments) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment.Remove("MSBuildSDKsPath"); // the test host's MSBuild must not leak into the consumer's build
        start.Environment.Remove("MSBUILD_EXE_PATH");
        start.Environment.Remove("MSBuildExtensionsPath");
        using var process = Process.Start(start)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeoutSeconds * 1000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {arguments} did not finish in {timeoutSeconds} s:\n{output}");
        }
        process.WaitForExit();
        return (process.ExitCode, output.ToString());
    }

    private static string Ok(string workingDirectory, string arguments)
    {
        var (exit, output) = Run(workingDirectory, arguments);
        Assert.That(exit, Is.EqualTo(0), $"dotnet {arguments} failed:\n{output}");
        return output;
    }

    [Test]
    public void Packed_libraries_and_tool_install_from_a_folder_feed_and_generate_the_same_tokens()
    {
        string solution = Path.Combine(TestPaths.RepoRoot, "OnnxDecoder.sln");
        string built = Path.Combine(TestPaths.RepoRoot, "src", "OnnxDecoder.Hosting", "bin", "Release", "net10.0", "linux-x64", "OnnxDecoder.Hosting.dll");
        Assert.That(File.Exists(built), Is.True, $"{built} is missing: build first with `dotnet build OnnxDecoder.sln -c Release` (this test packs that build)");
        string version = $"0.0.1-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        string root = TestPaths.NewTempFolder("package-test");
        try
        {
            string feed = Path.Combine(root, "feed");
            Ok(TestPaths.RepoRoot, $"pack \"{solution}\" -c Release --no-build -o \"{feed}\" -p:PackageVersion={version}");
            foreach (var id in Packages)
            {
                Assert.That(File.Exists(Path.Combine(feed, $"{id}.{version}.nupkg")), Is.True, $"{id} was not packed");
                Assert.That(File.Exists(Path.Combine(feed, $"{id}.{version}.snupkg")), Is.True, $"{id} has no symbol package");
            }

            string consumer = Path.Combine(root, "consumer");
            Directory.CreateDirectory(consumer);
            // The feed, plus the sources this machine already uses for third-party packages.
            var sources = Run(consumer, "nuget list source --format short").Output.Split('\n')
                .Select(l => l.Trim()).Where(l => l.StartsWith('E')).Select(l => l[1..].Trim()).ToList();
            var config = new StringBuilder("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<configuration>\n  <packageSources>\n    <clear />\n");
            config.Append($"    <add key=\"local\" value=\"{feed}\" />\n");
            for (int i = 0; i < sources.Count; i++) config.Append($"    <add key=\"source{i}\" value=\"{sources[i]}\" />\n");
            config.Append("  </packageSources>\n</configuration>\n");
            File.WriteAllText(Path.Combine(consumer, "NuGet.config"), config.ToString());

            // The tool: a local manifest, synth + export + generate.
            Ok(consumer, "new tool-manifest");
            Ok(consumer, $"tool install OnnxDecoder.Tool --version {version}");
            string checkpoint = Path.Combine(root, "checkpoint"), model = Path.Combine(root, "model");
            Ok(consumer, $"tool run onnx-decoder synth --preset llama-tiny --out \"{checkpoint}\"");
            Ok(consumer, $"tool run onnx-decoder export --checkpoint \"{checkpoint}\" --out \"{model}\"");
            Assert.That(File.Exists(Path.Combine(model, "genai_config.json")), Is.True);
            var generated = Ok(consumer, $"tool run onnx-decoder generate --model \"{model}\" --prompt \"Once upon a time\" --max-tokens 12 --format json");
            var toolResult = JsonNode.Parse(generated.Split('\n').Last(l => l.TrimStart().StartsWith('{')))!;
            var toolTokens = toolResult["token_ids"]!.AsArray().Select(t => (int)t!).ToArray();
            Assert.That(toolTokens, Has.Length.EqualTo(12));

            // The library: a new console app on OnnxDecoder.Hosting, greedy from the same folder.
            string app = Path.Combine(consumer, "app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <ImplicitUsings>enable</ImplicitUsings>
                    <Nullable>enable</Nullable>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="OnnxDecoder.Hosting" Version="{version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """
                using Microsoft.Extensions.DependencyInjection;
                using Microsoft.Extensions.Hosting;
                using Microsoft.Extensions.Logging;
                using OnnxDecoder.Hosting;
                using OnnxDecoder.Runtime;

                var builder = Host.CreateApplicationBuilder();
                builder.Logging.SetMinimumLevel(LogLevel.Warning);
                builder.Services.AddOnnxDecoder(builder.Configuration.GetSection(OnnxDecoderOptions.Section), options => options.ModelPath = args[0]);
                using var host = builder.Build();
                await host.StartAsync();
                var model = host.Services.GetRequiredService<OnnxDecoderModel>();
                await model.WaitUntilLoadedAsync(CancellationToken.None);
                var promptIds = model.Tokenizer.Encode(args[1], addBos: true);
                using var sequence = await model.SubmitAsync(promptIds, new GenerationOptions { MaxNewTokens = int.Parse(args[2]) }, CancellationToken.None);
                var result = await sequence.Completion;
                Console.WriteLine("tokens: " + string.Join(",", result.TokenIds));
                await host.StopAsync();
                """);
            var printed = Ok(app, $"run -c Release -- \"{model}\" \"Once upon a time\" 12");
            var line = printed.Split('\n').Single(l => l.StartsWith("tokens: ", StringComparison.Ordinal)).Trim();
            var appTokens = line["tokens: ".Length..].Split(',').Select(int.Parse).ToArray();
            Assert.That(appTokens, Is.EqualTo(toolTokens), "the library and the tool, both from the packages, give the same greedy tokens");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
            // This run's packages in the user's NuGet cache: nothing else will ever ask for this version.
            string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            foreach (var id in Packages)
            {
                string folder = Path.Combine(cache, id.ToLowerInvariant(), version);
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            }
        }
    }
}
