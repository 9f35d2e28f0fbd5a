using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Compiles Hugging Face chat templates (Jinja) and renders them as transformers does: Jinja2's
/// ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop controls, transformers'
/// tojson, raise_exception and strftime_now. Hand-written (no NuGet package runs Jinja); see README.
/// </summary>
public static class ChatTemplateEngine
{
    /// <summary>Parses a template once; <paramref name="name"/> (a file or model name) leads every error message.</summary>
    /// <exception cref="TemplateError">The template is not valid Jinja, or uses a construct this engine does not run.</exception>
    public static CompiledTemplate Compile(string source, string name)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.Length > Interpreter.MaxOutputLength)
            throw new TemplateError(name, 1, 1, $"template is longer than MaxOutputLength ({Interpreter.MaxOutputLength} characters)");
        try
        {
            return new CompiledTemplate(name, StatementParser.Parse(source, name)) { Source = source };
        }
        catch (InsufficientExecutionStackException)
        {
            throw new TemplateError(name, 1, 1, "the template nests too deeply for the stack");
        }
        catch (Exception e) when (e is not TemplateError)
        {
            throw new TemplateError(name, 1, 1, $"this chat-template engine cannot parse this ({e.GetType().Name}: {e.Message})");
        }
    }
}

/// <summary>A parsed template; <see cref="Render"/> may be called many times, from several threads.</summary>
public sealed class CompiledTemplate
{
    private readonly List<Stmt> body;

    internal CompiledTemplate(string name, List<Stmt> body)
    {
        Name = name;
        this.body = body;
    }

    public string Name { get; }

    /// <summary>The template's text (its markers tell which tool-call syntax the model was trained on).</summary>
    public string Source { get; init; } = "";

    /// <summary>
    /// Renders with the given variables (JSON as the template sees it: objects become dicts, arrays lists,
    /// integers int and other numbers float, as Python's json.loads makes them). <paramref name="now"/>
    /// is the clock strftime_now reads (default: the local time, as transformers uses).
    /// </summary>
    /// <exception cref="TemplateError">The template raised (raise_exception), failed, or hit a sandbox limit.</exception>
    public string Render(IReadOnlyDictionary<string, JsonNode?> variables, Func<DateTime>? now = null)
    {
        var values = variables.Select(v => new KeyValuePair<string, object?>(v.Key, FromJson(v.Value)));
        return new Interpreter(Name, now ?? (() => DateTime.Now)).Render(body, values);
    }

    internal static object? FromJson(JsonNode? node, int depth = 0)
    {
        if (depth > Interpreter.MaxRecursionDepth)
            throw new TemplateError("(variables)", 1, 1, $"a variable nests deeper than MaxRecursionDepth ({Interpreter.MaxRecursionDepth})");
        switch (node)
        {
            case null: return null;
            case JsonObject obj:
            {
                var dict = new PyDict();
                foreach (var (key, value) in obj) dict.Set(key, FromJson(value, depth + 1));
                return dict;
            }
            case JsonArray array: return array.Select(i => FromJson(i, depth + 1)).ToList();
            case JsonValue value:
                switch (value.GetValueKind())
                {
                    case JsonValueKind.String: return value.GetValue<string>();
                    case JsonValueKind.True: return true;
                    case JsonValueKind.False: return false;
                    case JsonValueKind.Number:
                    {
                        // As json.loads: a number written without fraction or exponent is an int.
                        string text = value.ToJsonString();
                        if (text.AsSpan().IndexOfAny('.', 'e', 'E') < 0 && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l))
                            return l;
                        return double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
                    }
                    default: return null;
                }
            default: return null;
        }
    }
}
