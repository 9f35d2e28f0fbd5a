// OnnxDecoder build script: `dotnet tool restore` once, then `dotnet cake [--target=NAME]`.
// Targets: Build, Test (default), Pack, Demo, Export-Models, Bench.
var target = Argument("target", "Test");
var configuration = Argument("configuration", "Release");
var solution = "./OnnxDecoder.sln";
var cli = "./tools/OnnxDecoder.Cli/OnnxDecoder.Cli.csproj";

void RunCli(string arguments)
{
    var exit = StartProcess("dotnet", new ProcessSettings {
        Arguments = $"run --project {cli} -c {configuration} --no-build -- {arguments}",
    });
    if (exit != 0) throw new Exception($"onnx-decoder {arguments} failed with exit code {exit}");
}

Task("Build")
    .Does(() => DotNetBuild(solution, new DotNetBuildSettings { Configuration = configuration }));

Task("Test")
    .IsDependentOn("Build")
    .Does(() => DotNetTest(solution, new DotNetTestSettings { Configuration = configuration, NoBuild = true }));

// NuGet packages (the libraries, their symbols, and the onnx-decoder tool) into artifacts/packages.
Task("Pack")
    .IsDependentOn("Build")
    .Does(() =>
{
    CleanDirectory("./artifacts/packages");
    DotNetPack(solution, new DotNetPackSettings { Configuration = configuration, NoBuild = true, OutputDirectory = "./artifacts/packages" });
});

// Exports every model card in models/ into artifacts/models/<name>/.
Task("Export-Models")
    .IsDependentOn("Build")
    .Does(() =>
{
    var cards = GetFiles("./models/*.json");
    if (cards.Count == 0) throw new Exception("no model cards in models/");
    foreach (var card in cards)
    {
        var name = card.GetFilenameWithoutExtension().ToString();
        Information($"Exporting {name}");
        RunCli($"export-card --card \"{card.FullPath}\" --out \"./artifacts/models/{name}\"");
    }
});

// The main job on the embedded default: export the seeded random model card, then generate from it.
Task("Demo")
    .IsDependentOn("Build")
    .Does(() => RunCli("demo --out ./artifacts/demo"));

// Benchmarks on every exported card: `onnx-decoder bench` (prefill, decode, TTFT, peak RSS, bytes
// allocated per token), then tools/OnnxDecoder.Bench, which alternates our runtime and
// onnxruntime-genai 0.18.0 on the same folder and prints both and the ratio.
Task("Bench")
    .IsDependentOn("Export-Models")
    .Does(() =>
{
    foreach (var card in GetFiles("./models/*.json"))
    {
        var folder = $"./artifacts/models/{card.GetFilenameWithoutExtension()}";
        RunCli($"bench --model \"{folder}\" --prompt-tokens 128 --gen-tokens 128 --runs 5");
        var exit = StartProcess("dotnet", new ProcessSettings {
            Arguments = $"run --project ./tools/OnnxDecoder.Bench/OnnxDecoder.Bench.csproj -c {configuration} --no-build -- \"{folder}\" 128 128 5",
        });
        if (exit != 0) throw new Exception($"OnnxDecoder.Bench failed on {folder}");
    }
});

RunTarget(target);
