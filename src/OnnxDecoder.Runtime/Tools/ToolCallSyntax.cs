using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using OnnxDecoder.Runtime.Sampling.Constraints;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Tools;

/// <summary>The ways models write tool calls.</summary>
public enum ToolCallFormat
{
    /// <summary>Hermes / Qwen: <c>&lt;tool_call&gt;\n{"name": ..., "arguments": {...}}\n&lt;/tool_call&gt;</c>, one block per call.</summary>
    Hermes,
    /// <summary>Llama 3.1 / 3.2: the reply is <c>{"name": ..., "parameters": {...}}</c>, optionally after &lt;|python_tag|&gt;.</summary>
    Llama3Json,
    /// <summary>Mistral: <c>[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]</c>.</summary>
    Mistral,
    /// <summary>Phi-4-mini (and Granite): <c>&lt;|tool_call|&gt;[{"name": ..., "arguments": {...}}, ...]&lt;|/tool_call|&gt;</c>.</summary>
    Phi4Mini,
    /// <summary>Qwen3-Coder: <c>&lt;tool_call&gt;\n&lt;function=NAME&gt;\n&lt;parameter=KEY&gt;\nVALUE\n&lt;/parameter&gt;\n...&lt;/function&gt;\n&lt;/tool_call&gt;</c>,
    /// one block per call, each value raw text typed by its parameter's schema (<see cref="QwenXmlToolCalls"/>).</summary>
    QwenXml,
    /// <summary>Templates without a syntax of their own: the reply is one call object, or a JSON array of them.</summary>
    GenericJson,
}

/// <summary>One parsed call: the function's name and its arguments, a JSON object's text as the model wrote it
/// (compact JSON when the model wrote them as a JSON string).</summary>
public sealed record ToolCall(string Name, string ArgumentsJson);

/// <summary>A reply split into its text and its tool calls (none when the model answered in text).</summary>
public sealed record ToolCallParse(string Content, IReadOnlyList<ToolCall> Calls);

/// <summary>
/// One tool-call syntax: how a reply's calls are found and parsed, and the grammar that forces a call
/// in that syntax (tool_choice required or a named function). Calls are parsed with System.Text.Json
/// from the marker on; a reply whose calls do not parse, or name a function that is not offered, is text.
/// </summary>
public sealed class ToolCallSyntax
{
    /// <summary>Calls one forced reply may hold when parallel calls are allowed (the grammar's bound).</summary>
    public const int MaxParallelCalls = 4;

    private static readonly JsonWriterOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private ToolCallSyntax(ToolCallFormat format, string? open, string? close, string argumentsKey)
    {
        Format = format;
        Open = open;
        Close = close;
        ArgumentsKey = argumentsKey;
    }

    public ToolCallFormat Format { get; }
    /// <summary>The marker before the calls (null: the reply is the calls).</summary>
    public string? Open { get; }
    /// <summary>The marker after a call block (null: none).</summary>
    public string? Close { get; }
    /// <summary>The member that holds the arguments: "arguments", or Llama's "parameters".</summary>
    public string ArgumentsKey { get; }

    public static ToolCallSyntax Hermes { get; } = new(ToolCallFormat.Hermes, "<tool_call>", "</tool_call>", "arguments");
    public static ToolCallSyntax Llama3Json { get; } = new(ToolCallFormat.Llama3Json, null, null, "parameters");
    public static ToolCallSyntax Mistral { get; } = new(ToolCallFormat.Mistral, "[TOOL_CALLS]", null, "arguments");
    public static ToolCallSyntax Phi4Mini { get; } = new(ToolCallFormat.Phi4Mini, "<|tool_call|>", "<|/tool_call|>", "arguments");
    public static ToolCallSyntax QwenXml { get; } = new(ToolCallFormat.QwenXml, QwenXmlToolCalls.Open, QwenXmlToolCalls.Close, "arguments");
    public static ToolCallSyntax GenericJson { get; } = new(ToolCallFormat.GenericJson, null, null, "arguments");

    /// <summary>The syntax a chat template teaches, read from its markers; <see cref="GenericJson"/> when it has none, and for
    /// other "&lt;function=" forms (Llama 3.1's custom <c>&lt;function=NAME&gt;{...}&lt;/function&gt;</c>), which are not parsed.</summary>
    public static ToolCallSyntax Detect(string? templateSource)
    {
        if (string.IsNullOrEmpty(templateSource)) return GenericJson;
        if (templateSource.Contains("<function=", StringComparison.Ordinal))
            return templateSource.Contains("<parameter=", StringComparison.Ordinal) ? QwenXml : GenericJson;
        if (templateSource.Contains("<tool_call>", StringComparison.Ordinal)) return Hermes;
        if (templateSource.Contains("[TOOL_CALLS]", StringComparison.Ordinal)) return Mistral;
        if (templateSource.Contains("<|tool_call|>", StringComparison.Ordinal)) return Phi4Mini;
        if (templateSource.Contains("<|python_tag|>", StringComparison.Ordinal)
            || (templateSource.Contains("<|start_header_id|>", StringComparison.Ordinal) && templateSource.Contains("\"parameters\"", StringComparison.Ordinal)))
            return Llama3Json;
        return GenericJson;
    }

    /// <summary>
    /// The grammar of a reply that is only calls in this syntax, each valid for its function's parameter schema.
    /// <paramref name="openInPrompt"/>: the open marker is a special token the prompt ends with (a grammar spells
    /// bytes, never special tokens); <paramref name="closeIsSpecial"/>: the close marker is one, so the reply ends
    /// where it would stand. A syntax that repeats its open marker per call then allows one call only.
    /// </summary>
    /// <exception cref="GrammarException">A tool or parameter schema the constraint cannot serve (the message names it).</exception>
    public Grammar Grammar(string toolsJson, string? only, bool parallel, bool openInPrompt = false, bool closeIsSpecial = false)
    {
        using var document = JsonSchemaCompiler.Parse(toolsJson, "tools");
        var grammar = new Grammar { Description = $"{Format} tool call" };
        var json = new JsonGrammar(grammar);
        if (Format == ToolCallFormat.QwenXml)
            return grammar.WithRoot(QwenXmlToolCalls.Grammar(json, document.RootElement, only, parallel, openInPrompt, closeIsSpecial, MaxParallelCalls));
        var call = ToolCallGrammar.Call(json, document.RootElement, only, ArgumentsKey);
        var ws = json.Whitespace;
        GrammarNode List(GrammarNode item) => parallel
            ? Seq(Literal("["), ws, item, ws, Repeat(Seq(Literal(","), ws, item, ws), 0, MaxParallelCalls - 1), Literal("]"))
            : Seq(Literal("["), ws, item, ws, Literal("]"));
        GrammarNode body = Format switch
        {
            ToolCallFormat.Hermes when openInPrompt =>
                closeIsSpecial ? Seq(Literal("\n"), call) : Seq(Literal("\n"), call, Literal("\n" + Close)),
            ToolCallFormat.Hermes => Block(),
            ToolCallFormat.Llama3Json => call,
            ToolCallFormat.Mistral => Seq(openInPrompt ? Empty : Literal(Open!), List(call)),
            ToolCallFormat.Phi4Mini => Seq(openInPrompt ? Empty : Literal(Open!), List(call), closeIsSpecial ? Empty : Literal(Close!)),
            _ => parallel ? List(call) : call,
        };
        return grammar.WithRoot(body);

        GrammarNode Block()
        {
            var one = Seq(Literal(Open + "\n"), call, closeIsSpecial ? Empty : Literal("\n" + Close));
            return parallel && !closeIsSpecial ? Seq(one, Repeat(Seq(Literal("\n"), one), 0, MaxParallelCalls - 1)) : one;
        }
    }

    /// <summary>
    /// Splits a reply into text and calls. <paramref name="names"/>: the functions offered (a call of another is not a
    /// call); <paramref name="openInPrompt"/>: the prompt ended with the open marker, so the reply starts inside it;
    /// <paramref name="jsonValued"/>: for <see cref="ToolCallFormat.QwenXml"/>, the parameters whose values are JSON
    /// (<see cref="QwenXmlToolCalls.JsonValuedParameters"/>; null: all keep their text). The JSON syntaxes need no types.
    /// </summary>
    public ToolCallParse Parse(string reply, IReadOnlySet<string> names, bool openInPrompt = false,
        IReadOnlyDictionary<string, IReadOnlySet<string>>? jsonValued = null)
    {
        string text = openInPrompt && Open is not null ? Open + reply : reply;
        if (Format == ToolCallFormat.QwenXml) return QwenXmlToolCalls.Parse(reply, text, names, jsonValued);
        var calls = new List<ToolCall>();
        string content;
        switch (Format)
        {
            case ToolCallFormat.Hermes:
            {
                int first = text.IndexOf(Open!, StringComparison.Ordinal);
                if (first < 0) return new ToolCallParse(reply, []);
                content = text[..first].TrimEnd();
                int at = first;
                while (at < text.Length)
                {
                    at = SkipWhitespace(text, at);
                    if (at == text.Length) break;
                    if (!text.AsSpan(at).StartsWith(Open!, StringComparison.Ordinal)) return new ToolCallParse(reply, []);
                    if (!TryReadValue(text, at + Open!.Length, out var value, out at) || !TryCall(value, names, calls)) return new ToolCallParse(reply, []);
                    at = SkipWhitespace(text, at);
                    if (text.AsSpan(at).StartsWith(Close!, StringComparison.Ordinal)) at += Close!.Length;
                }
                break;
            }
            case ToolCallFormat.Mistral or ToolCallFormat.Phi4Mini:
            {
                int first = text.IndexOf(Open!, StringComparison.Ordinal);
                if (first < 0) return new ToolCallParse(reply, []);
                content = text[..first].TrimEnd();
                if (!TryReadValue(text, first + Open!.Length, out var value, out int end) || !TryCalls(value, names, calls)) return new ToolCallParse(reply, []);
                end = SkipWhitespace(text, end);
                if (Close is not null && text.AsSpan(end).StartsWith(Close, StringComparison.Ordinal)) end += Close.Length;
                if (SkipWhitespace(text, end) != text.Length) return new ToolCallParse(reply, []);
                break;
            }
            default:
            {
                // The whole reply is the calls: Llama's objects (after <|python_tag|>, several joined by ';'), or the generic form.
                content = "";
                int at = SkipWhitespace(text, 0);
                const string pythonTag = "<|python_tag|>";
                if (Format == ToolCallFormat.Llama3Json && text.AsSpan(at).StartsWith(pythonTag, StringComparison.Ordinal))
                    at = SkipWhitespace(text, at + pythonTag.Length);
                if (at == text.Length || text[at] is not ('{' or '[')) return new ToolCallParse(reply, []);
                while (true)
                {
                    if (!TryReadValue(text, at, out var value, out at) || !TryCalls(value, names, calls)) return new ToolCallParse(reply, []);
                    at = SkipWhitespace(text, at);
                    if (at == text.Length) break;
                    if (Format != ToolCallFormat.Llama3Json || text[at] != ';') return new ToolCallParse(reply, []);
                    at = SkipWhitespace(text, at + 1);
                    if (at == text.Length) break;
                }
                break;
            }
        }
        return calls.Count == 0 ? new ToolCallParse(reply, []) : new ToolCallParse(content, calls);
    }

    /// <summary>Where a call may begin in <paramref name="text"/>: text before it can be shown while the reply streams.
    /// Returns the length that is surely text (the rest might still become a call).</summary>
    public int SurelyText(string text, bool openInPrompt)
    {
        if (openInPrompt) return 0;
        if (Open is null)
        {
            // The reply is the calls or nothing: text that starts like JSON (or Llama's tag) is held until the end.
            int at = SkipWhitespace(text, 0);
            if (at == text.Length) return 0;
            return text[at] is '{' or '[' || "<|python_tag|>".StartsWith(text[at..Math.Min(text.Length, at + 14)], StringComparison.Ordinal) ? 0 : text.Length;
        }
        int marker = text.IndexOf(Open, StringComparison.Ordinal);
        if (marker >= 0) return marker;
        for (int length = Math.Min(Open.Length - 1, text.Length); length > 0; length--)
            if (text.AsSpan(text.Length - length).SequenceEqual(Open.AsSpan(0, length))) return text.Length - length;
        return text.Length;
    }

    private static int SkipWhitespace(string text, int at)
    {
        while (at < text.Length && char.IsWhiteSpace(text[at])) at++;
        return at;
    }

    // One JSON value from text[start..]; end is the index after it.
    private static bool TryReadValue(string text, int start, out JsonElement value, out int end)
    {
        value = default;
        end = start;
        byte[] bytes = Encoding.UTF8.GetBytes(text[start..]);
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { AllowMultipleValues = true, MaxDepth = 64 });
        try
        {
            if (!JsonDocument.TryParseValue(ref reader, out var document)) return false;
            using (document) value = document.RootElement.Clone();
        }
        catch (JsonException)
        {
            return false;
        }
        end = start + Encoding.UTF8.GetCharCount(bytes, 0, (int)reader.BytesConsumed);
        return true;
    }

    private bool TryCalls(JsonElement value, IReadOnlySet<string> names, List<ToolCall> calls)
    {
        if (value.ValueKind == JsonValueKind.Object) return TryCall(value, names, calls);
        if (value.ValueKind != JsonValueKind.Array || value.GetArrayLength() == 0) return false;
        foreach (var item in value.EnumerateArray())
            if (!TryCall(item, names, calls)) return false;
        return true;
    }

    private bool TryCall(JsonElement call, IReadOnlySet<string> names, List<ToolCall> calls)
    {
        if (call.ValueKind != JsonValueKind.Object) return false;
        if (!call.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || !names.Contains(name.GetString()!)) return false;
        JsonElement arguments = default;
        bool found = call.TryGetProperty(ArgumentsKey, out arguments) || call.TryGetProperty("arguments", out arguments)
            || call.TryGetProperty("parameters", out arguments);
        if (!found || arguments.ValueKind == JsonValueKind.Null)
        {
            calls.Add(new ToolCall(name.GetString()!, "{}"));
            return true;
        }
        if (arguments.ValueKind == JsonValueKind.String)
        {
            // Some models write the arguments as a JSON string, as the OpenAI wire format does.
            try
            {
                using var inner = JsonDocument.Parse(arguments.GetString()!);
                if (inner.RootElement.ValueKind != JsonValueKind.Object) return false;
                calls.Add(new ToolCall(name.GetString()!, CompactJson(inner.RootElement)));
                return true;
            }
            catch (JsonException)
            {
                return false;
            }
        }
        if (arguments.ValueKind != JsonValueKind.Object) return false;
        calls.Add(new ToolCall(name.GetString()!, arguments.GetRawText())); // as the model wrote it, so streamed pieces add up to it
        return true;
    }

    /// <summary>A JSON value without insignificant whitespace, non-ASCII kept as is.</summary>
    public static string CompactJson(JsonElement value)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, Compact)) value.WriteTo(writer);
        return Encoding.UTF8.GetString(stream.ToArray());
    }
}
