using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using OnnxDecoder.Runtime.Sampling.Constraints;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Tools;

/// <summary>
/// Qwen3-Coder's XML tool calls, one block per call:
/// <c>&lt;tool_call&gt;\n&lt;function=NAME&gt;\n&lt;parameter=KEY&gt;\nVALUE\n&lt;/parameter&gt;\n...&lt;/function&gt;\n&lt;/tool_call&gt;</c>.
/// A VALUE is raw text (one newline on each side belongs to the markup); it becomes a JSON value by the parameter's schema
/// type, as the model's own parser does: a string parameter (or one without a type, or not declared) keeps the text; any
/// other reads the text as JSON, then as a Python literal (the chat template writes earlier calls' non-string values with
/// Python's str(): True, None, single quotes), and keeps the text when neither reads. Hand-written: no library reads this.
/// </summary>
public static class QwenXmlToolCalls
{
    public const string Open = "<tool_call>";
    public const string Close = "</tool_call>";
    private const string FunctionOpen = "<function=", FunctionClose = "</function>";
    private const string ParameterOpen = "<parameter=", ParameterClose = "</parameter>";
    private const int MaxPythonDepth = 64;

    private static readonly JsonWriterOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>For each function of an OpenAI tools list, the parameters whose values are JSON (every declared parameter
    /// whose schema type is not "string"); the others keep their text. Tools of another shape are skipped (the request's
    /// own checks refuse them).</summary>
    public static Dictionary<string, IReadOnlySet<string>> JsonValuedParameters(string toolsJson)
    {
        var result = new Dictionary<string, IReadOnlySet<string>>(StringComparer.Ordinal);
        using var document = JsonDocument.Parse(toolsJson, new JsonDocumentOptions { MaxDepth = 256 });
        if (document.RootElement.ValueKind != JsonValueKind.Array) return result;
        foreach (var tool in document.RootElement.EnumerateArray())
        {
            if (tool.ValueKind != JsonValueKind.Object || !tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object
                || !function.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String) continue;
            var typed = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (key, schema) in Properties(function))
                if (!IsText(schema)) typed.Add(key);
            result[name.GetString()!] = typed;
        }
        return result;
    }

    private static IEnumerable<(string Key, JsonElement Schema)> Properties(JsonElement function)
    {
        if (!function.TryGetProperty("parameters", out var parameters) || parameters.ValueKind != JsonValueKind.Object
            || !parameters.TryGetProperty("properties", out var properties) || properties.ValueKind != JsonValueKind.Object) yield break;
        foreach (var property in properties.EnumerateObject()) yield return (property.Name, property.Value);
    }

    // The model's parser keeps a value's text when its type is "string" or missing.
    private static bool IsText(JsonElement schema) =>
        schema.ValueKind != JsonValueKind.Object || !schema.TryGetProperty("type", out var type)
        || (type.ValueKind == JsonValueKind.String && type.GetString() == "string");

    /// <summary>Splits a reply into the text before its first call and its calls; a reply with a call that does not read
    /// (broken markup, a function not in <paramref name="names"/>, a parameter twice) is all text.</summary>
    /// <param name="jsonValued">From <see cref="JsonValuedParameters"/>; null: every value keeps its text.</param>
    public static ToolCallParse Parse(string reply, string text, IReadOnlySet<string> names, IReadOnlyDictionary<string, IReadOnlySet<string>>? jsonValued)
    {
        var none = new ToolCallParse(reply, []);
        int first = text.IndexOf(Open, StringComparison.Ordinal);
        if (first < 0) return none;
        string content = text[..first].TrimEnd();
        var calls = new List<ToolCall>();
        int at = first;
        while (true)
        {
            at = SkipWhitespace(text, at);
            if (at == text.Length) break;
            if (!StartsWith(text, at, Open)) return none;
            at = SkipWhitespace(text, at + Open.Length);
            if (!StartsWith(text, at, FunctionOpen)) return none;
            int nameEnd = text.IndexOf('>', at);
            if (nameEnd < 0) return none;
            string name = text[(at + FunctionOpen.Length)..nameEnd].Trim();
            if (!names.Contains(name)) return none;
            IReadOnlySet<string> typed = jsonValued is not null && jsonValued.TryGetValue(name, out var set) ? set : new HashSet<string>();
            at = nameEnd + 1;
            var seen = new HashSet<string>(StringComparer.Ordinal);
            using var stream = new MemoryStream();
            using (var writer = new Utf8JsonWriter(stream, Compact))
            {
                writer.WriteStartObject();
                while (true)
                {
                    at = SkipWhitespace(text, at);
                    if (StartsWith(text, at, FunctionClose)) break;
                    if (!StartsWith(text, at, ParameterOpen)) return none;
                    int keyEnd = text.IndexOf('>', at);
                    if (keyEnd < 0) return none;
                    string key = text[(at + ParameterOpen.Length)..keyEnd].Trim();
                    if (key.Length == 0 || !seen.Add(key)) return none;
                    int valueEnd = text.IndexOf(ParameterClose, keyEnd + 1, StringComparison.Ordinal);
                    if (valueEnd < 0) return none;
                    writer.WritePropertyName(key);
                    WriteValue(writer, TrimOneNewline(text[(keyEnd + 1)..valueEnd]), typed.Contains(key));
                    at = valueEnd + ParameterClose.Length;
                }
                writer.WriteEndObject();
            }
            calls.Add(new ToolCall(name, Encoding.UTF8.GetString(stream.ToArray())));
            at = SkipWhitespace(text, at + FunctionClose.Length);
            // The close marker may be a special token decoding drops, so it is optional.
            if (StartsWith(text, at, Close)) at += Close.Length;
        }
        return new ToolCallParse(content, calls);
    }

    // The markup puts one newline after <parameter=KEY> and one before </parameter>.
    private static string TrimOneNewline(string value)
    {
        if (value.StartsWith('\n')) value = value[1..];
        if (value.EndsWith('\n')) value = value[..^1];
        return value;
    }

    private static void WriteValue(Utf8JsonWriter writer, string value, bool json)
    {
        if (json)
        {
            try
            {
                using var document = JsonDocument.Parse(value, new JsonDocumentOptions { MaxDepth = 64 });
                document.RootElement.WriteTo(writer);
                return;
            }
            catch (JsonException)
            {
            }
            var literal = new PythonLiteral(value);
            if (literal.TryRead(out byte[]? bytes))
            {
                writer.WriteRawValue(bytes, skipInputValidation: false);
                return;
            }
        }
        writer.WriteStringValue(value);
    }

    /// <summary>The grammar of a reply that is only calls, each of one of the offered functions (<paramref name="only"/>:
    /// that one) with its required parameters, in the schema's order: a string parameter's value is text without
    /// "&lt;/parameter&gt;" that its string keywords allow (<see cref="QwenXmlTextValue"/>), another's is the JSON its schema allows.</summary>
    public static GrammarNode Grammar(JsonGrammar json, JsonElement tools, string? only, bool parallel, bool openInPrompt, bool closeIsSpecial,
        int maxCalls, string source = "tools")
    {
        if (tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() == 0)
            throw new GrammarException($"{source}: must be a non-empty array of {{\"type\": \"function\", \"function\": {{...}}}}");
        var compiler = new JsonSchemaCompiler(json);
        var text = ValueText();
        var functions = new List<GrammarNode>();
        for (int i = 0; i < tools.GetArrayLength(); i++)
        {
            string at = $"{source}[{i}].function";
            if (tools[i].ValueKind != JsonValueKind.Object || !tools[i].TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object
                || !function.TryGetProperty("name", out var nameElement) || nameElement.ValueKind != JsonValueKind.String)
                throw new GrammarException($"{at}: missing or without a string name; give {{\"name\": ..., \"parameters\": {{...}}}}");
            string name = nameElement.GetString()!;
            if (only is not null && name != only) continue;
            CheckName(name, $"{at}.name");
            var members = new List<GrammarNode>();
            var required = new List<bool>();
            var requiredNames = RequiredNames(function);
            foreach (var (key, schema) in Properties(function))
            {
                string pointer = $"/properties/{key.Replace("~", "~0").Replace("/", "~1")}";
                CheckName(key, $"{at}.parameters#{pointer}");
                var parameters = function.GetProperty("parameters");
                GrammarNode value = IsText(schema) ? QwenXmlTextValue.For(parameters, schema, text, at, name, key, pointer)
                    : JsonValue(compiler, parameters, schema, pointer, $"{at}.parameters", name, key);
                members.Add(Seq(Literal($"{ParameterOpen}{key}>\n"), value, Literal($"\n{ParameterClose}\n")));
                required.Add(requiredNames.Contains(key));
            }
            var body = members.Count == 0 ? Empty : new MembersNode([.. members], [.. required], Empty);
            functions.Add(Seq(Literal($"{FunctionOpen}{name}>\n"), body, Literal(FunctionClose)));
        }
        if (functions.Count == 0) throw new GrammarException($"{source}: no function is named '{only}' (tool_choice must name one of the tools)");
        var call = Alt([.. functions]);
        if (openInPrompt) return Seq(Literal("\n"), call, closeIsSpecial ? Empty : Literal("\n" + Close));
        var one = Seq(Literal(Open + "\n"), call, closeIsSpecial ? Empty : Literal("\n" + Close));
        return parallel && !closeIsSpecial ? Seq(one, Repeat(Seq(Literal("\n"), one), 0, maxCalls - 1)) : one;
    }

    // The JSON form's refusals, with the function and parameter they are about.
    private static GrammarNode JsonValue(JsonSchemaCompiler compiler, JsonElement parameters, JsonElement schema, string pointer, string source,
        string function, string key)
    {
        try
        {
            return compiler.CompileMember(parameters, schema, pointer, source);
        }
        catch (GrammarException e) when (e.Message.StartsWith(source + "#", StringComparison.Ordinal))
        {
            int colon = e.Message.IndexOf(": ", StringComparison.Ordinal);
            if (colon < 0) throw;
            throw new GrammarException($"{e.Message[..colon]} (function '{function}', parameter '{key}'){e.Message[colon..]}");
        }
    }

    private static HashSet<string> RequiredNames(JsonElement function)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        if (function.TryGetProperty("parameters", out var parameters) && parameters.ValueKind == JsonValueKind.Object
            && parameters.TryGetProperty("required", out var list) && list.ValueKind == JsonValueKind.Array)
            foreach (var item in list.EnumerateArray())
                if (item.ValueKind == JsonValueKind.String) names.Add(item.GetString()!);
        return names;
    }

    private static void CheckName(string name, string at)
    {
        if (name.Length == 0 || name.AsSpan().IndexOfAny(">\n<") >= 0 || name.Trim() != name)
            throw new GrammarException($"{at}: '{name}' cannot be written in Qwen3-Coder's XML calls (no '<', '>', newlines or edge spaces): rename it");
    }

    /// <summary>Any UTF-8 text that does not contain "&lt;/parameter&gt;": an automaton that tracks how much of the marker
    /// it has just read ('&lt;' occurs in the marker only at its start, so a '&lt;' always restarts the match).</summary>
    public static GrammarNode ValueText()
    {
        const string marker = ParameterClose;
        GrammarNode Except(params char[] excluded) =>
            Alt(Bytes(ByteSet.Range(0x00, 0x7F).Minus(ByteSet.Of([.. excluded.Select(c => (byte)c)]))), JsonGrammar.Utf8NonAscii());
        // After '<': the marker's next characters, up to its whole but last, then a character that breaks the match.
        var partial = new List<GrammarNode>();
        var broken = new List<GrammarNode>();
        for (int j = 1; j < marker.Length; j++)
        {
            partial.Add(Literal(marker[1..j]));
            broken.Add(Seq(Literal(marker[1..j]), Except(marker[j], '<')));
        }
        var restarts = Repeat(Seq(Alt([.. partial]), Literal("<")), 0, -1);
        return Seq(
            Repeat(Alt(Except('<'), Seq(Literal("<"), restarts, Alt([.. broken]))), 0, -1),
            Optional(Seq(Literal("<"), restarts, Alt([.. partial]))));
    }

    private static bool StartsWith(string text, int at, string marker) => text.AsSpan(at).StartsWith(marker, StringComparison.Ordinal);

    private static int SkipWhitespace(string text, int at)
    {
        while (at < text.Length && char.IsWhiteSpace(text[at])) at++;
        return at;
    }

    /// <summary>A Python literal as str() writes JSON-like values (dicts, lists, tuples, quoted strings, numbers, True,
    /// False, None), rewritten as JSON; anything else does not read.</summary>
    private sealed class PythonLiteral(string text)
    {
        private readonly string _text = text;
        private int _at;

        public bool TryRead(out byte[]? json)
        {
            json = null;
            using var stream = new MemoryStream();
            using (var writer = new Utf8JsonWriter(stream, Compact))
            {
                if (!Value(writer, 0)) return false;
                Skip();
                if (_at != _text.Length) return false;
            }
            json = stream.ToArray();
            return true;
        }

        private void Skip()
        {
            while (_at < _text.Length && char.IsWhiteSpace(_text[_at])) _at++;
        }

        private bool Value(Utf8JsonWriter writer, int depth)
        {
            if (depth > MaxPythonDepth) return false;
            Skip();
            if (_at == _text.Length) return false;
            char c = _text[_at];
            if (c == '{')
            {
                _at++;
                writer.WriteStartObject();
                Skip();
                if (Take('}')) { writer.WriteEndObject(); return true; }
                while (true)
                {
                    Skip();
                    if (!String(out string? key)) return false;
                    writer.WritePropertyName(key!);
                    Skip();
                    if (!Take(':') || !Value(writer, depth + 1)) return false;
                    Skip();
                    if (Take('}')) { writer.WriteEndObject(); return true; }
                    if (!Take(',')) return false;
                    Skip();
                    if (Take('}')) { writer.WriteEndObject(); return true; }
                }
            }
            if (c is '[' or '(')
            {
                char end = c == '[' ? ']' : ')';
                _at++;
                writer.WriteStartArray();
                Skip();
                if (Take(end)) { writer.WriteEndArray(); return true; }
                while (true)
                {
                    if (!Value(writer, depth + 1)) return false;
                    Skip();
                    if (Take(end)) { writer.WriteEndArray(); return true; }
                    if (!Take(',')) return false;
                    Skip();
                    if (Take(end)) { writer.WriteEndArray(); return true; }
                }
            }
            if (c is '\'' or '"')
            {
                if (!String(out string? value)) return false;
                writer.WriteStringValue(value);
                return true;
            }
            foreach (var (word, write) in new (string, Action)[]
                { ("True", () => writer.WriteBooleanValue(true)), ("False", () => writer.WriteBooleanValue(false)), ("None", writer.WriteNullValue) })
                if (_text.AsSpan(_at).StartsWith(word, StringComparison.Ordinal))
                {
                    _at += word.Length;
                    write();
                    return true;
                }
            int start = _at;
            while (_at < _text.Length && (char.IsAsciiDigit(_text[_at]) || _text[_at] is '-' or '+' or '.' or 'e' or 'E')) _at++;
            string number = _text[start.._at];
            // Python's str() of an int or float is a JSON number except for inf / nan, which do not reach here.
            if (number.Length == 0 || !double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out _)) return false;
            try
            {
                using var check = JsonDocument.Parse(number);
                if (check.RootElement.ValueKind != JsonValueKind.Number) return false;
            }
            catch (JsonException)
            {
                return false;
            }
            writer.WriteRawValue(number);
            return true;
        }

        private bool Take(char c)
        {
            if (_at < _text.Length && _text[_at] == c)
            {
                _at++;
                return true;
            }
            return false;
        }

        private bool String(out string? value)
        {
            value = null;
            if (_at == _text.Length || _text[_at] is not ('\'' or '"')) return false;
            char quote = _text[_at++];
            var builder = new StringBuilder();
            while (_at < _text.Length)
            {
                char c = _text[_at++];
                if (c == quote)
                {
                    value = builder.ToString();
                    return true;
                }
                if (c == '\n') return false;
                if (c != '\\')
                {
                    builder.Append(c);
                    continue;
                }
                if (_at == _text.Length) return false;
                char e = _text[_at++];
                switch (e)
                {
                    case '\\' or '\'' or '"': builder.Append(e); break;
                    case 'n': builder.Append('\n'); break;
                    case 't': builder.Append('\t'); break;
                    case 'r': builder.Append('\r'); break;
                    case 'x' or 'u' or 'U':
                        int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                        if (_at + digits > _text.Length
                            || !int.TryParse(_text.AsSpan(_at, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code)
                            || code > 0x10FFFF || code is >= 0xD800 and <= 0xDFFF) return false;
                        builder.Append(char.ConvertFromUtf32(code));
                        _at += digits;
                        break;
                    default: return false;
                }
            }
            return false;
        }
    }
}
