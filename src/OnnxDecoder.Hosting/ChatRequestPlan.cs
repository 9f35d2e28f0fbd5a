using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Runtime.Tools;

namespace OnnxDecoder.Hosting;

/// <summary>OpenAI's tool_choice: none, auto, required, or one named function.</summary>
public enum ToolChoiceMode { Auto, None, Required, Function }

public readonly record struct ToolChoice(ToolChoiceMode Mode, string? FunctionName = null)
{
    public static ToolChoice Auto => new(ToolChoiceMode.Auto);
}

/// <summary>OpenAI's response_format: text, json_object, or json_schema (with its strict flag).</summary>
public enum ResponseFormatKind { Text, JsonObject, JsonSchema }

public sealed record ResponseFormatRequest(ResponseFormatKind Kind, string? SchemaJson = null, bool Strict = false);

/// <summary>A chat request's tools, tool_choice or response_format that cannot be served; <see cref="Field"/> names the request field.</summary>
public sealed class ChatRequestException(string message, string field) : ArgumentException(message)
{
    public string Field { get; } = field;
}

/// <summary>
/// How one chat request runs, shared by the OpenAI server and the IChatClient so both map tools and response
/// formats the same way: the prompt (tools through the model's chat template, or folded into plain messages),
/// the constraint (a call in the model's tool-call syntax for tool_choice required or a named function; JSON or a
/// JSON Schema for response_format), and the parser that turns the reply into text and tool calls.
/// </summary>
public sealed class ChatRequestPlan
{
    private const int MaxCachedConstraints = 64;
    // Compiled constraints per model, by what they were compiled from: a client that sends the same tools or
    // schema each turn reuses the grammar and its memoised token masks.
    private static readonly ConditionalWeakTable<OnnxDecoderModel, ConcurrentDictionary<string, GrammarConstraint>> Constraints = new();

    private readonly HashSet<string> _names;
    private readonly bool _openInPrompt;
    private readonly IReadOnlyDictionary<string, IReadOnlySet<string>>? _jsonValued; // XML calls: which parameters' values are JSON

    private ChatRequestPlan(int[] promptIds, ILogitsConstraint? constraint, ToolCallSyntax? syntax, HashSet<string> names,
        bool openInPrompt, bool callForced, IReadOnlyDictionary<string, IReadOnlySet<string>>? jsonValued)
    {
        _jsonValued = jsonValued;
        CallForced = callForced;
        PromptIds = promptIds;
        Constraint = constraint;
        Syntax = syntax;
        _names = names;
        _openInPrompt = openInPrompt;
    }

    public int[] PromptIds { get; }
    /// <summary>Null when the reply is free.</summary>
    public ILogitsConstraint? Constraint { get; }
    /// <summary>The syntax replies are parsed in; null when the request offers no tools (or tool_choice is none).</summary>
    public ToolCallSyntax? Syntax { get; }

    /// <summary>The grammar forces the reply to be calls (tool_choice required or a named function).</summary>
    public bool CallForced { get; }

    /// <summary>For a forced reply: a scanner that streams its calls as they are written (null otherwise).</summary>
    public ForcedCallStream? NewCallStream() => !CallForced ? null
        : Syntax!.Format == ToolCallFormat.QwenXml ? ForcedCallStream.ForQwenXml(_names, _jsonValued) : new ForcedCallStream(Syntax.ArgumentsKey);

    /// <summary>The reply's text and calls (no calls when the request parses none).</summary>
    public ToolCallParse Parse(string reply) => Syntax is null ? new ToolCallParse(reply, []) : Syntax.Parse(reply, _names, _openInPrompt, _jsonValued);

    /// <summary>How much of a reply so far can be streamed as text: the rest may still become a tool call.</summary>
    public int SurelyText(string replySoFar) => Syntax is null ? replySoFar.Length : Syntax.SurelyText(replySoFar, _openInPrompt);

    /// <param name="messages">OpenAI-shaped messages: role, content, and tool_calls / tool_call_id where they apply.</param>
    /// <param name="tools">OpenAI tools (<c>[{"type": "function", "function": {...}}]</c>); null or empty for none.</param>
    /// <exception cref="ChatRequestException">A tool, tool_choice or response_format that cannot be served.</exception>
    /// <exception cref="Runtime.Tokenization.Jinja.TemplateError">The chat template refuses the conversation.</exception>
    public static ChatRequestPlan Create(OnnxDecoderModel model, JsonArray messages, JsonArray? tools, ToolChoice choice, bool parallelToolCalls,
        ResponseFormatRequest? format)
    {
        bool hasTools = tools is { Count: > 0 };
        var names = hasTools ? ToolNames(tools!) : new HashSet<string>(StringComparer.Ordinal);
        if (choice.Mode == ToolChoiceMode.Required && !hasTools)
            throw new ChatRequestException("tool_choice is 'required' but the request offers no tools: add tools or choose 'auto'", "tool_choice");
        if (choice.Mode == ToolChoiceMode.Function && !names.Contains(choice.FunctionName ?? ""))
            throw new ChatRequestException(
                $"tool_choice names the function '{choice.FunctionName}', which is not among the tools ({string.Join(", ", names)})", "tool_choice");
        bool forced = choice.Mode is ToolChoiceMode.Required or ToolChoiceMode.Function;
        var syntax = hasTools && choice.Mode != ToolChoiceMode.None ? model.ChatPrompt.ToolSyntax : null;

        // A marker that is one special token cannot be spelled by a grammar (special tokens have no bytes): the prompt
        // ends with it instead, and a special close marker is left to the end of the reply.
        int? openToken = forced && syntax?.Open is { } open ? SpecialTokenId(model.Tokenizer, open) : null;
        bool closeIsSpecial = forced && syntax?.Close is { } close && SpecialTokenId(model.Tokenizer, close) is not null;

        int[] promptIds = model.ChatPrompt.Encode(messages, hasTools ? tools : null, parallelToolCalls, model.Tokenizer);
        if (openToken is { } id) promptIds = [.. promptIds, id];

        ILogitsConstraint? constraint = null;
        if (forced)
        {
            string toolsJson = tools!.ToJsonString();
            string? only = choice.Mode == ToolChoiceMode.Function ? choice.FunctionName : null;
            constraint = Cached(model, $"tools\n{syntax!.Format}\n{only}\n{parallelToolCalls}\n{openToken is not null}\n{closeIsSpecial}\n{toolsJson}",
                () => new GrammarConstraint(syntax.Grammar(toolsJson, only, parallelToolCalls, openToken is not null, closeIsSpecial)), "tools");
        }
        else if (format is { Kind: ResponseFormatKind.JsonObject })
            constraint = Cached(model, "json_object", () => GrammarConstraint.JsonSchema("""{"type": "object"}"""), "response_format");
        else if (format is { Kind: ResponseFormatKind.JsonSchema, SchemaJson: { } schema })
        {
            try
            {
                const string field = "response_format.json_schema.schema";
                constraint = Cached(model, $"json_schema\n{schema}", () => GrammarConstraint.JsonSchema(schema, field), field);
            }
            catch (ChatRequestException) when (!format.Strict)
            {
                // Without strict the schema is a hint: a schema beyond the constraint's subset still gets a JSON object.
                constraint = Cached(model, "json_object", () => GrammarConstraint.JsonSchema("""{"type": "object"}"""), "response_format");
            }
        }
        var jsonValued = syntax?.Format == ToolCallFormat.QwenXml ? QwenXmlToolCalls.JsonValuedParameters(tools!.ToJsonString()) : null;
        return new ChatRequestPlan(promptIds, constraint, syntax, names, openToken is not null, forced, jsonValued);
    }

    private static GrammarConstraint Cached(OnnxDecoderModel model, string key, Func<GrammarConstraint> compile, string field)
    {
        var cache = Constraints.GetOrCreateValue(model);
        if (cache.TryGetValue(key, out var known)) return known;
        GrammarConstraint built;
        try
        {
            built = compile();
            // The recognizer is built now, so a grammar no output of this vocabulary satisfies is the client's 400, not a failed generation.
            built.MatcherFor(TokenTrie.For(model.Tokenizer, model.VocabSize));
        }
        catch (GrammarException e)
        {
            throw new ChatRequestException(e.Message, FieldOf(e.Message, field));
        }
        if (cache.Count >= MaxCachedConstraints) cache.Clear();
        return cache.GetOrAdd(key, built);
    }

    // Grammar errors start with their place ("tools[0].function.parameters#/properties/x: ..."): the field is its first part.
    private static string FieldOf(string message, string fallback)
    {
        int end = message.IndexOfAny(['#', ':']);
        string head = end > 0 ? message[..end] : "";
        return head.StartsWith("tools", StringComparison.Ordinal) || head.StartsWith("response_format", StringComparison.Ordinal) ? head : fallback;
    }

    /// <summary>The function names of an OpenAI tools list, checking its shape (400s name the tool).</summary>
    public static HashSet<string> ToolNames(JsonArray tools)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < tools.Count; i++)
        {
            string at = $"tools[{i}]";
            if (tools[i] is not JsonObject tool)
                throw new ChatRequestException($"'{at}' must be an object {{\"type\": \"function\", \"function\": {{...}}}}", at);
            if (tool["type"] is not JsonValue type || type.GetValueKind() != JsonValueKind.String || type.GetValue<string>() != "function")
                throw new ChatRequestException($"'{at}.type' must be \"function\" (the only tool type)", $"{at}.type");
            if (tool["function"] is not JsonObject function)
                throw new ChatRequestException($"'{at}.function' is required: {{\"name\": ..., \"parameters\": {{...}}}}", $"{at}.function");
            if (function["name"] is not JsonValue name || name.GetValueKind() != JsonValueKind.String || name.GetValue<string>().Length == 0)
                throw new ChatRequestException($"'{at}.function.name' must be a non-empty string", $"{at}.function.name");
            if (function["parameters"] is { } parameters && parameters.GetValueKind() != JsonValueKind.Object)
                throw new ChatRequestException($"'{at}.function.parameters' must be a JSON Schema object", $"{at}.function.parameters");
            if (!names.Add(name.GetValue<string>()))
                throw new ChatRequestException($"'{at}.function.name': '{name.GetValue<string>()}' names two tools", $"{at}.function.name");
        }
        return names;
    }

    /// <summary>The id of <paramref name="marker"/> when the tokenizer has it as one special token (which decoding skips).</summary>
    private static int? SpecialTokenId(TextTokenizer tokenizer, string marker)
    {
        var ids = tokenizer.Encode(marker, addBos: false);
        return ids.Length == 1 && tokenizer.Decode(ids, skipSpecialTokens: true).Length == 0 ? ids[0] : null;
    }

    /// <summary>A new tool-call id in OpenAI's form.</summary>
    public static string NewCallId() => "call_" + Guid.NewGuid().ToString("N")[..24];
}
