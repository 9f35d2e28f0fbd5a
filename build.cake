// OnnxDecoder build script: `dotnet tool restore` once, then `dotnet cake [--target=NAME]`.
// Targets: Build, Test (default), Pack, Demo, Export-Models, Bench, Bench-Kernels.
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
// onnxruntime-genai 0.18.0 on the same folder and prints both and the ratio. Then the peers: ours,
// onnxruntime-genai and llama.cpp (LLamaSharp) on the same weights at fp32 / int8 / int4 (GGUF F32 /
// Q8_0 / Q4_0 written from the same checkpoint), with KL divergences, on stories260K and the synth
// llama-110m; and our host time per decode step beyond ONNX Runtime's run.
var benchProject = "./tools/OnnxDecoder.Bench/OnnxDecoder.Bench.csproj";
void RunBench(string arguments)
{
    var exit = StartProcess("dotnet", new ProcessSettings {
        Arguments = $"run --project {benchProject} -c {configuration} --no-build -- {arguments}",
    });
    if (exit != 0) throw new Exception($"OnnxDecoder.Bench {arguments} failed with exit code {exit}");
}

Task("Bench")
    .IsDependentOn("Export-Models")
    .Does(() =>
{
    foreach (var card in GetFiles("./models/*.json"))
    {
        var folder = $"./artifacts/models/{card.GetFilenameWithoutExtension()}";
        RunCli($"bench --model \"{folder}\" --prompt-tokens 128 --gen-tokens 128 --runs 5");
        RunBench($"\"{folder}\" 128 128 5 2"); // both at 2 intra-op threads
    }
    RunBench("peers --checkpoint ../shared/models/stories260K/stories260K.bin --work ./artifacts/bench/stories260k --threads 2 --runs 5 " +
        "--kl-tokens ../shared/models/stories260K/greedy_once_upon_a_time.json");
    RunBench("peers --checkpoint llama-110m --work ./artifacts/bench/llama-110m --threads 2 --runs 5");
    RunBench("overhead --model ./artifacts/models/stories260k --threads 1");
    RunBench("overhead --model ./artifacts/models/stories260k --threads 2");
});

// int4 / int8 kernel candidates (MatMulNBits block size, least-error vs round-to-nearest scales, accuracy level,
// zero points, fp16 scales, DequantizeLinear -> MatMul, DynamicQuantizeMatMul, spinning, prepacking): speed and KL
// from fp32, on the synth llama-110m and stories260K (teacher-forced over llama2.c's greedy story).
Task("Bench-Kernels")
    .IsDependentOn("Build")
    .Does(() =>
{
    RunBench("kernels --checkpoint llama-110m --work ./artifacts/bench/llama-110m --threads 2 --runs 3");
    RunBench("kernels --checkpoint ../shared/models/stories260K/stories260K.bin --work ./artifacts/bench/stories260k --threads 2 --runs 3 " +
        "--kl-tokens ../shared/models/stories260K/greedy_once_upon_a_time.json");
});

RunTarget(target);
