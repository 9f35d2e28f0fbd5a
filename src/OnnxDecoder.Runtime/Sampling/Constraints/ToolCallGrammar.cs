using System.Text.Encodings.Web;
using System.Text.Json;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// The grammar of one tool call for an OpenAI tools list
/// (<c>[{"type": "function", "function": {"name", "description", "parameters"}}]</c>): a JSON object
/// <c>{"name": NAME, "arguments": ARGS}</c> where NAME is one of the functions' names and ARGS
/// satisfies that function's parameter schema (compiled by <see cref="JsonSchemaCompiler"/>; each
/// schema's $refs resolve inside it). A function without parameters takes any object.
/// </summary>
public static class ToolCallGrammar
{
    private static readonly JsonSerializerOptions NameEncoding = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <param name="toolsJson">The tools array as JSON text.</param>
    /// <param name="only">When set, the call must be of this function (tool_choice naming one).</param>
    public static Grammar Compile(string toolsJson, string? only = null, string source = "tools", int maxWhitespace = JsonGrammar.DefaultMaxWhitespace)
    {
        using var document = JsonSchemaCompiler.Parse(toolsJson, source);
        var grammar = new Grammar { Description = $"tool-call {source}" };
        var json = new JsonGrammar(grammar, maxWhitespace);
        return grammar.WithRoot(json.Document(Call(json, document.RootElement, only, "arguments", source)));
    }

    /// <summary>One call object <c>{"name": NAME, "ARGUMENTSKEY": ARGS}</c> as a node of <paramref name="json"/>'s grammar,
    /// for syntaxes that wrap calls in their own markers (Llama's JSON names the arguments "parameters").</summary>
    public static GrammarNode Call(JsonGrammar json, JsonElement tools, string? only, string argumentsKey, string source = "tools")
    {
        if (tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() == 0)
            throw new GrammarException($"{source}: must be a non-empty array of {{\"type\": \"function\", \"function\": {{...}}}}");
        var compiler = new JsonSchemaCompiler(json);
        var ws = json.Whitespace;
        var calls = new List<GrammarNode>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        string key = JsonSerializer.Serialize(argumentsKey, NameEncoding);
        for (int i = 0; i < tools.GetArrayLength(); i++)
        {
            var tool = tools[i];
            string at = $"{source}[{i}]";
            if (tool.ValueKind != JsonValueKind.Object) throw new GrammarException($"{at}: must be an object");
            if (!tool.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
                throw new GrammarException($"{at}.type: must be \"function\" (the only tool type)");
            if (!tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
                throw new GrammarException($"{at}.function: missing; give {{\"name\": ..., \"parameters\": {{...}}}}");
            if (!function.TryGetProperty("name", out var nameElement) || nameElement.ValueKind != JsonValueKind.String || nameElement.GetString()!.Length == 0)
                throw new GrammarException($"{at}.function.name: missing or not a non-empty string");
            string name = nameElement.GetString()!;
            if (!names.Add(name)) throw new GrammarException($"{at}.function.name: '{name}' names two tools");
            if (only is not null && name != only) continue;
            var arguments = function.TryGetProperty("parameters", out var parameters)
                ? compiler.CompileDocument(parameters, $"{at}.function.parameters")
                : json.AnyObject();
            calls.Add(Seq(Literal("{"), ws, Literal("\"name\""), ws, Literal(":"), ws, Literal(JsonSerializer.Serialize(name, NameEncoding)), ws,
                Literal(","), ws, Literal(key), ws, Literal(":"), ws, arguments, ws, Literal("}")));
        }
        if (calls.Count == 0) throw new GrammarException($"{source}: no function is named '{only}' (tool_choice must name one of the tools)");
        return Alt([.. calls]);
    }
}
