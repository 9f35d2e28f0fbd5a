using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// A model folder's own chat template, as transformers finds it: chat_template.jinja, else tokenizer_config.json's
/// chat_template (a string, or a list of {"name", "template"} from which <c>default</c> is used, and <c>tool_use</c>
/// when tools are given), with that file's bos_token / eos_token (strings or {"content": ...} objects).
/// </summary>
public sealed class ModelChatTemplate
{
    private const long MaxConfigBytes = 16 << 20;

    private readonly Dictionary<string, CompiledTemplate> named;

    private ModelChatTemplate(Dictionary<string, CompiledTemplate> named, string? bosToken, string? eosToken)
    {
        this.named = named;
        BosToken = bosToken;
        EosToken = eosToken;
    }

    public string? BosToken { get; }

    public string? EosToken { get; }

    /// <summary>The folder's template, or null when it has none.</summary>
    /// <exception cref="InvalidDataException">tokenizer_config.json is malformed, or its chat_template has the wrong shape.</exception>
    /// <exception cref="TemplateError">The template is not Jinja this engine runs.</exception>
    public static ModelChatTemplate? TryLoad(string folder)
    {
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        JsonObject? config = null;
        if (File.Exists(configPath))
        {
            if (new FileInfo(configPath).Length > MaxConfigBytes)
                throw new InvalidDataException($"{configPath}: larger than {MaxConfigBytes >> 20} MiB; is it a tokenizer_config.json?");
            try
            {
                config = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject
                    ?? throw new InvalidDataException($"{configPath}: expected a JSON object");
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{configPath}: not valid JSON ({e.Message})");
            }
        }
        string? bos = TokenText(config?["bos_token"], configPath, "bos_token");
        string? eos = TokenText(config?["eos_token"], configPath, "eos_token");
        var templates = new Dictionary<string, CompiledTemplate>(StringComparer.Ordinal);
        string jinjaPath = Path.Combine(folder, "chat_template.jinja");
        if (File.Exists(jinjaPath))
        {
            if (new FileInfo(jinjaPath).Length > MaxConfigBytes)
                throw new InvalidDataException($"{jinjaPath}: larger than {MaxConfigBytes >> 20} MiB");
            templates["default"] = ChatTemplateEngine.Compile(File.ReadAllText(jinjaPath), jinjaPath);
            return new ModelChatTemplate(templates, bos, eos);
        }
        switch (config?["chat_template"])
        {
            case null:
                return null;
            case JsonValue value when value.GetValueKind() == JsonValueKind.String:
                templates["default"] = ChatTemplateEngine.Compile(value.GetValue<string>(), $"{configPath} chat_template");
                break;
            case JsonArray list:
                foreach (var entry in list)
                {
                    if (entry is not JsonObject item || item["name"] is not JsonValue n || n.GetValueKind() != JsonValueKind.String
                        || item["template"] is not JsonValue t || t.GetValueKind() != JsonValueKind.String)
                        throw new InvalidDataException($"{configPath}: chat_template list entries must be {{\"name\": string, \"template\": string}}");
                    string name = n.GetValue<string>();
                    templates[name] = ChatTemplateEngine.Compile(t.GetValue<string>(), $"{configPath} chat_template '{name}'");
                }
                break;
            default:
                throw new InvalidDataException($"{configPath}: chat_template must be a string or a list of named templates");
        }
        return new ModelChatTemplate(templates, bos, eos);
    }

    private static string? TokenText(JsonNode? node, string file, string field) => node switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
        JsonObject o when o["content"] is JsonValue c && c.GetValueKind() == JsonValueKind.String => c.GetValue<string>(),
        _ => throw new InvalidDataException($"{file}: {field} must be a string or an object with a \"content\" string"),
    };

    /// <summary>transformers' choice: tool_use when tools are given and it exists, else default (a single template is default).</summary>
    public CompiledTemplate Select(bool withTools)
    {
        if (withTools && named.TryGetValue("tool_use", out var toolUse)) return toolUse;
        if (named.TryGetValue("default", out var fallback)) return fallback;
        if (named.Count == 1) return named.Values.First();
        throw new InvalidDataException($"the chat_template list has no 'default' template (it has {string.Join(", ", named.Keys)})");
    }

    /// <summary>
    /// The prompt, rendered with the variables transformers passes: messages, tools and documents (None when not
    /// given), add_generation_prompt, bos_token, eos_token; <paramref name="extra"/> (template kwargs) come last and win.
    /// </summary>
    public string Render(JsonArray messages, JsonArray? tools, bool addGenerationPrompt, IReadOnlyDictionary<string, JsonNode?>? extra = null,
        Func<DateTime>? now = null)
    {
        var variables = new Dictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            ["messages"] = messages,
            ["tools"] = tools,
            ["documents"] = null,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = BosToken,
            ["eos_token"] = EosToken,
        };
        if (extra is not null) foreach (var (name, value) in extra) variables[name] = value;
        return Select(tools is not null).Render(variables, now);
    }
}
