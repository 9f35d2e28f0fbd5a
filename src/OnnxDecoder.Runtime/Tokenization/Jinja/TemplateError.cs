namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// A chat template that cannot be compiled or rendered: a syntax error, a runtime error (a missing
/// variable used as an object, a type mismatch, <c>raise_exception</c>), a sandbox limit, or a
/// construct the engine does not run. The message is one line naming the template, line and column.
/// </summary>
public sealed class TemplateError : Exception
{
    public TemplateError(string templateName, int line, int column, string message)
        : base($"template '{templateName}' line {line} column {column}: {message.ReplaceLineEndings(" ")}")
    {
        TemplateName = templateName;
        Line = line;
        Column = column;
        Reason = message;
    }

    public string TemplateName { get; }
    public int Line { get; }
    public int Column { get; }

    /// <summary>The message without the location.</summary>
    public string Reason { get; }
}

/// <summary>An error raised while evaluating, before the location is known; the interpreter adds it.</summary>
internal sealed class JinjaRuntimeError(string message) : Exception(message);
