using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Hosting;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Server;

/// <summary>
/// A /v1/chat/completions or /v1/completions request, read field by field from untrusted JSON:
/// every wrong type or out-of-range value is refused with a 400 naming the field.
/// </summary>
internal sealed class OpenAIRequest
{
    public string? Model { get; private init; }
    public bool Stream { get; private init; }
    public bool IncludeUsage { get; private init; }
    public int? MaxTokens { get; private init; }
    /// <summary>The sampling parameters the request gave (rows of <see cref="SamplingParameters"/>); the rest keep the model's defaults.</summary>
    public IReadOnlyList<(SamplingParameter Parameter, double Value)> Sampling { get; private init; } = [];
    public IReadOnlyList<string> Stop { get; private init; } = [];
    /// <summary>Chat: the conversation, OpenAI-shaped (role, content, tool_calls with parsed arguments, tool_call_id).</summary>
    public JsonArray Messages { get; private init; } = [];
    /// <summary>Chat: the tools offered (null: none).</summary>
    public JsonArray? Tools { get; private init; }
    public ToolChoice ToolChoice { get; private init; } = ToolChoice.Auto;
    public bool ParallelToolCalls { get; private init; } = true;
    public ResponseFormatRequest? ResponseFormat { get; private init; }
    /// <summary>Completions: the prompt text, or token ids.</summary>
    public string? Prompt { get; private init; }
    public int[]? PromptIds { get; private init; }

    public const int MaxStopSequences = 4;

    public static OpenAIRequest Parse(JsonDocument document, bool chat)
    {
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw OpenAIError.Invalid("the request body must be a JSON object");
        foreach (var unsupported in new[] { "functions", "logit_bias" })
            if (root.TryGetProperty(unsupported, out var value) && value.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined)
                && !(value.ValueKind == JsonValueKind.Array && value.GetArrayLength() == 0) && !(value.ValueKind == JsonValueKind.Object && !value.EnumerateObject().Any()))
                throw OpenAIError.Invalid($"'{unsupported}' is not supported by this server", unsupported);
        if (Optional(root, "logprobs") is { } logprobs && (logprobs.ValueKind == JsonValueKind.True || logprobs.ValueKind == JsonValueKind.Number))
            throw OpenAIError.Invalid("'logprobs' is not supported by this server", "logprobs");
        if (Integer(root, "n", 1, 128) is { } n && n != 1) throw OpenAIError.Invalid("only n = 1 is supported", "n");
        if (Integer(root, "best_of", 1, 128) is { } bestOf && bestOf != 1) throw OpenAIError.Invalid("only best_of = 1 is supported", "best_of");
        if (Boolean(root, "echo") == true) throw OpenAIError.Invalid("'echo' is not supported by this server", "echo");
        if (String(root, "suffix") is { Length: > 0 }) throw OpenAIError.Invalid("'suffix' is not supported by this server", "suffix");
        foreach (var penalty in new[] { "presence_penalty", "frequency_penalty" })
            if (Number(root, penalty, -2, 2) is { } p && p != 0)
                throw OpenAIError.Invalid($"'{penalty}' is not supported; use 'repetition_penalty' (a multiplicative penalty, 1 = off)", penalty);

        var streamOptions = Optional(root, "stream_options");
        if (streamOptions is { ValueKind: not JsonValueKind.Object }) throw OpenAIError.Invalid("'stream_options' must be an object", "stream_options");
        int[]? ids = null;
        string? prompt = chat ? null : PromptText(root, out ids);
        return new OpenAIRequest
        {
            Model = String(root, "model"),
            Stream = Boolean(root, "stream") ?? false,
            IncludeUsage = streamOptions is { } so && (Boolean(so, "include_usage", "stream_options.include_usage") ?? false),
            MaxTokens = Integer(root, "max_completion_tokens", int.MinValue, int.MaxValue) ?? Integer(root, "max_tokens", int.MinValue, int.MaxValue),
            Sampling = SamplingValues(root),
            Stop = StopSequences(root),
            Messages = chat ? Conversation(root) : [],
            Tools = chat ? ToolList(root) : null,
            ToolChoice = chat ? ToolChoiceOf(root) : ToolChoice.Auto,
            ParallelToolCalls = Boolean(root, "parallel_tool_calls") ?? true,
            ResponseFormat = chat ? ResponseFormatOf(root) : null,
            Prompt = prompt,
            PromptIds = ids,
        };
    }

    /// <summary>Sampling and limits for this request, the output budget already checked against the context:
    /// the request's sampling values over <paramref name="defaults"/> (the model's).</summary>
    public GenerationOptions ToGeneration(int maxNewTokens, SamplingOptions defaults)
    {
        var sampling = defaults;
        foreach (var (parameter, value) in Sampling) sampling = sampling.Set(parameter, value);
        return new GenerationOptions { MaxNewTokens = maxNewTokens, StopStrings = Stop, Sampling = sampling.Validate() };
    }

    /// <summary>Each sampling parameter the request gives, checked against its row of the table (a 400 naming the field).</summary>
    private static List<(SamplingParameter, double)> SamplingValues(JsonElement root)
    {
        var values = new List<(SamplingParameter, double)>();
        foreach (var parameter in SamplingParameters.All)
        {
            if (Optional(root, parameter.Name) is not { } value) continue;
            if (parameter == SamplingParameters.Seed)
            {
                // Any 64-bit integer is a seed; it is folded to the 32 bits the draw takes.
                if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long seed)) throw OpenAIError.Invalid("'seed' must be an integer", "seed");
                values.Add((parameter, unchecked((int)seed)));
                continue;
            }
            double number = parameter.IsInteger
                ? (value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out long whole) ? whole : throw OpenAIError.Invalid($"'{parameter.Name}' must be an integer", parameter.Name))
                : (value.ValueKind == JsonValueKind.Number && value.TryGetDouble(out double real) && double.IsFinite(real) ? real : throw OpenAIError.Invalid($"'{parameter.Name}' must be a number", parameter.Name));
            if (!parameter.Contains(number)) throw OpenAIError.Invalid(parameter.OutOfRangeMessage(parameter.Name, number), parameter.Name);
            values.Add((parameter, number));
        }
        return values;
    }

    private static JsonElement? Optional(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    private static string? String(JsonElement root, string name) => Optional(root, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } value => Text(value, name),
        _ => throw OpenAIError.Invalid($"'{name}' must be a string", name),
    };

    /// <summary>A JSON string's text; a string holding invalid UTF-8 is refused naming the field.</summary>
    private static string Text(JsonElement value, string param)
    {
        try
        {
            return value.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw OpenAIError.Invalid($"'{param}' is not valid UTF-8", param);
        }
    }

    private static bool? Boolean(JsonElement root, string name, string? param = null) => Optional(root, name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        _ => throw OpenAIError.Invalid($"'{param ?? name}' must be true or false", param ?? name),
    };

    private static int? Integer(JsonElement root, string name, int min, int max)
    {
        if (Optional(root, name) is not { } value) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long number)) throw OpenAIError.Invalid($"'{name}' must be an integer", name);
        if (number < min || number > max) throw OpenAIError.Invalid($"'{name}' is {number}; it must be between {min} and {max}", name);
        return (int)number;
    }

    private static float? Number(JsonElement root, string name, float min, float max)
    {
        if (Optional(root, name) is not { } value) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number) || !double.IsFinite(number)) throw OpenAIError.Invalid($"'{name}' must be a number", name);
        if (number < min || number > max) throw OpenAIError.Invalid($"'{name}' is {number}; it must be between {min} and {max}", name);
        return (float)number;
    }

    private static IReadOnlyList<string> StopSequences(JsonElement root)
    {
        switch (Optional(root, "stop"))
        {
            case null: return [];
            case { ValueKind: JsonValueKind.String } one: return Text(one, "stop") is { Length: > 0 } s ? [s] : [];
            case { ValueKind: JsonValueKind.Array } many:
                if (many.GetArrayLength() > MaxStopSequences) throw OpenAIError.Invalid($"'stop' has {many.GetArrayLength()} sequences; at most {MaxStopSequences} are allowed", "stop");
                return many.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? Text(e, "stop") : throw OpenAIError.Invalid("'stop' must be a string or an array of strings", "stop"))
                    .Where(s => s.Length > 0).ToList();
            default: throw OpenAIError.Invalid("'stop' must be a string or an array of strings", "stop");
        }
    }

    private static JsonArray Conversation(JsonElement root)
    {
        if (Optional(root, "messages") is not { ValueKind: JsonValueKind.Array } messages)
            throw OpenAIError.Invalid("'messages' is required: an array of {role, content} objects", "messages");
        if (messages.GetArrayLength() == 0) throw OpenAIError.Invalid("'messages' must not be empty", "messages");
        var result = new JsonArray();
        int index = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string where = $"messages[{index++}]";
            if (message.ValueKind != JsonValueKind.Object) throw OpenAIError.Invalid($"'{where}' must be an object", where);
            string role = String(message, "role") ?? throw OpenAIError.Invalid($"'{where}.role' is required", $"{where}.role");
            role = role switch
            {
                "system" or "developer" => "system",
                "user" or "assistant" or "tool" => role,
                _ => throw OpenAIError.Invalid($"'{where}.role' is '{role}'; this server takes system, developer, user, assistant and tool messages", $"{where}.role"),
            };
            var item = new JsonObject { ["role"] = role, ["content"] = Content(message, where) };
            if (role == "tool")
                item["tool_call_id"] = String(message, "tool_call_id") ?? throw OpenAIError.Invalid($"'{where}.tool_call_id' is required in a tool message (the id of the call it answers)", $"{where}.tool_call_id");
            if (role == "assistant" && Optional(message, "tool_calls") is { } calls) item["tool_calls"] = CallsOf(calls, $"{where}.tool_calls");
            if (String(message, "name") is { Length: > 0 } name) item["name"] = name;
            result.Add(item);
        }
        return result;
    }

    /// <summary>An assistant's earlier tool_calls; arguments (a JSON string on the wire) become objects, as chat templates read them.</summary>
    private static JsonArray CallsOf(JsonElement calls, string where)
    {
        if (calls.ValueKind != JsonValueKind.Array) throw OpenAIError.Invalid($"'{where}' must be an array", where);
        var result = new JsonArray();
        int index = 0;
        foreach (var call in calls.EnumerateArray())
        {
            string at = $"{where}[{index++}]";
            if (call.ValueKind != JsonValueKind.Object || Optional(call, "function") is not { ValueKind: JsonValueKind.Object } function)
                throw OpenAIError.Invalid($"'{at}' must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}", at);
            string name = String(function, "name") ?? throw OpenAIError.Invalid($"'{at}.function.name' is required", $"{at}.function.name");
            JsonNode? arguments;
            switch (Optional(function, "arguments"))
            {
                case null: arguments = new JsonObject(); break;
                case { ValueKind: JsonValueKind.String } text:
                    try
                    {
                        arguments = JsonNode.Parse(Text(text, $"{at}.function.arguments"), documentOptions: new JsonDocumentOptions { MaxDepth = 32 });
                    }
                    catch (JsonException e)
                    {
                        throw OpenAIError.Invalid($"'{at}.function.arguments' is not valid JSON ({e.Message})", $"{at}.function.arguments");
                    }
                    break;
                case { ValueKind: JsonValueKind.Object } value: arguments = JsonNode.Parse(value.GetRawText()); break;
                default: throw OpenAIError.Invalid($"'{at}.function.arguments' must be a JSON string", $"{at}.function.arguments");
            }
            result.Add(new JsonObject
            {
                ["id"] = String(call, "id") ?? "",
                ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = name, ["arguments"] = arguments },
            });
        }
        return result;
    }

    private static JsonArray? ToolList(JsonElement root)
    {
        switch (Optional(root, "tools"))
        {
            case null: return null;
            case { ValueKind: JsonValueKind.Array } tools:
                if (tools.GetArrayLength() == 0) return null;
                if (tools.GetArrayLength() > MaxTools) throw OpenAIError.Invalid($"'tools' has {tools.GetArrayLength()} tools; at most {MaxTools} are accepted", "tools");
                var list = (JsonArray)JsonNode.Parse(tools.GetRawText())!;
                try
                {
                    ChatRequestPlan.ToolNames(list);
                }
                catch (ChatRequestException e)
                {
                    throw OpenAIError.Invalid(e.Message, e.Field);
                }
                return list;
            default: throw OpenAIError.Invalid("'tools' must be an array of {\"type\": \"function\", \"function\": {...}}", "tools");
        }
    }

    public const int MaxTools = 128;

    private static ToolChoice ToolChoiceOf(JsonElement root)
    {
        switch (Optional(root, "tool_choice"))
        {
            case null: return ToolChoice.Auto;
            case { ValueKind: JsonValueKind.String } text:
                return Text(text, "tool_choice") switch
                {
                    "auto" => ToolChoice.Auto,
                    "none" => new ToolChoice(ToolChoiceMode.None),
                    "required" => new ToolChoice(ToolChoiceMode.Required),
                    var other => throw OpenAIError.Invalid($"'tool_choice' is '{other}'; use none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}", "tool_choice"),
                };
            case { ValueKind: JsonValueKind.Object } named:
                if (String(named, "type") != "function" || Optional(named, "function") is not { ValueKind: JsonValueKind.Object } function || String(function, "name") is not { Length: > 0 } name)
                    throw OpenAIError.Invalid("'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice");
                return new ToolChoice(ToolChoiceMode.Function, name);
            default: throw OpenAIError.Invalid("'tool_choice' must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice");
        }
    }

    private static ResponseFormatRequest? ResponseFormatOf(JsonElement root)
    {
        if (Optional(root, "response_format") is not { } format) return null;
        if (format.ValueKind != JsonValueKind.Object) throw OpenAIError.Invalid("'response_format' must be an object {\"type\": ...}", "response_format");
        switch (String(format, "type"))
        {
            case "text": return null;
            case "json_object": return new ResponseFormatRequest(ResponseFormatKind.JsonObject);
            case "json_schema":
                if (Optional(format, "json_schema") is not { ValueKind: JsonValueKind.Object } spec)
                    throw OpenAIError.Invalid("'response_format.json_schema' is required: {\"name\", \"schema\", \"strict\"}", "response_format.json_schema");
                bool strict = Boolean(spec, "strict", "response_format.json_schema.strict") ?? false;
                return Optional(spec, "schema") switch
                {
                    null => new ResponseFormatRequest(ResponseFormatKind.JsonObject),
                    { ValueKind: JsonValueKind.Object or JsonValueKind.True } schema => new ResponseFormatRequest(ResponseFormatKind.JsonSchema, schema.GetRawText(), strict),
                    _ => throw OpenAIError.Invalid("'response_format.json_schema.schema' must be a JSON Schema object", "response_format.json_schema.schema"),
                };
            case var other:
                throw OpenAIError.Invalid($"'response_format.type' is '{other}'; use text, json_object or json_schema", "response_format.type");
        }
    }

    /// <summary>A message's content: a string, or an array of text parts.</summary>
    private static string Content(JsonElement message, string where)
    {
        switch (Optional(message, "content"))
        {
            case null: return "";
            case { ValueKind: JsonValueKind.String } text: return Text(text, $"{where}.content");
            case { ValueKind: JsonValueKind.Array } parts:
                var joined = new System.Text.StringBuilder();
                foreach (var part in parts.EnumerateArray())
                {
                    if (part.ValueKind != JsonValueKind.Object || String(part, "type") != "text")
                        throw OpenAIError.Invalid($"'{where}.content' may only hold text parts ({{\"type\": \"text\", \"text\": ...}})", $"{where}.content");
                    joined.Append(String(part, "text"));
                }
                return joined.ToString();
            default: throw OpenAIError.Invalid($"'{where}.content' must be a string or an array of text parts", $"{where}.content");
        }
    }

    /// <summary>A completion prompt: a string, an array of one string, or an array of token ids.</summary>
    private static string? PromptText(JsonElement root, out int[]? ids)
    {
        ids = null;
        switch (Optional(root, "prompt"))
        {
            case null: throw OpenAIError.Invalid("'prompt' is required", "prompt");
            case { ValueKind: JsonValueKind.String } text: return Text(text, "prompt");
            case { ValueKind: JsonValueKind.Array } array when array.GetArrayLength() == 1 && array[0].ValueKind == JsonValueKind.String: return Text(array[0], "prompt");
            case { ValueKind: JsonValueKind.Array } array when array.GetArrayLength() > 0 && array.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number):
                ids = array.EnumerateArray().Select(e => e.TryGetInt32(out int id) && id >= 0 ? id : throw OpenAIError.Invalid("'prompt' token ids must be non-negative integers", "prompt")).ToArray();
                return null;
            default: throw OpenAIError.Invalid("'prompt' must be a string or an array of token ids (one prompt per request)", "prompt");
        }
    }
}
