using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Runtime.Tools;

/// <summary>
/// Tools for a prompt whose template does not render them (no template, or one without tools): the functions
/// are described in a system message that asks for the generic JSON form, an assistant's earlier calls become
/// that JSON as its text, and tool results become user turns, so hand-written formats and tool-less templates
/// (which take only system, user and assistant) carry the whole conversation.
/// </summary>
public static class ToolPrompt
{
    private static readonly JsonSerializerOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The conversation with tools folded into plain system / user / assistant messages.</summary>
    public static JsonArray Fold(JsonArray messages, JsonArray? tools, bool parallel)
    {
        var folded = new JsonArray();
        if (tools is { Count: > 0 })
        {
            var text = new StringBuilder("You can call these functions (their parameters are JSON Schemas):\n");
            foreach (var tool in tools) text.Append(tool!["function"]?.ToJsonString(Relaxed)).Append('\n');
            text.Append("To call one, reply with only {\"name\": <function-name>, \"arguments\": <args-json-object>}");
            if (parallel) text.Append(", or a JSON array of such objects to call several");
            text.Append('.');
            string instructions = text.ToString();
            if (messages.Count > 0 && (string?)messages[0]!["role"] == "system")
                instructions = $"{Content(messages[0]!)}\n\n{instructions}";
            folded.Add(new JsonObject { ["role"] = "system", ["content"] = instructions });
        }
        for (int i = 0; i < messages.Count; i++)
        {
            var message = messages[i]!;
            string role = (string?)message["role"] ?? "user";
            if (i == 0 && role == "system" && tools is { Count: > 0 }) continue; // merged into the tool instructions
            switch (role)
            {
                case "tool":
                    string id = (string?)message["tool_call_id"] ?? "";
                    folded.Add(new JsonObject { ["role"] = "user", ["content"] = $"Result of call {id}: {Content(message)}" });
                    break;
                case "assistant" when message["tool_calls"] is JsonArray { Count: > 0 } calls:
                    var objects = calls.Select(c => (JsonNode)new JsonObject
                    {
                        ["name"] = (string?)c!["function"]?["name"],
                        ["arguments"] = c["function"]?["arguments"]?.DeepClone(),
                    }).ToArray();
                    string json = objects.Length == 1 ? objects[0].ToJsonString(Relaxed) : new JsonArray(objects).ToJsonString(Relaxed);
                    string prefix = Content(message);
                    folded.Add(new JsonObject { ["role"] = "assistant", ["content"] = prefix.Length > 0 ? $"{prefix}\n{json}" : json });
                    break;
                default:
                    folded.Add(new JsonObject { ["role"] = role, ["content"] = Content(message) });
                    break;
            }
        }
        return folded;
    }

    private static string Content(JsonNode message) =>
        message["content"] is JsonValue value && value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : "";
}
