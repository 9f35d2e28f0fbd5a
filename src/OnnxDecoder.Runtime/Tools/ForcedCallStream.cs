using System.Text;
using System.Text.Json;

namespace OnnxDecoder.Runtime.Tools;

/// <summary>What a streamed reply added to its calls: a call that begins (its index and name), or more of its arguments' text.</summary>
public readonly record struct ToolCallDelta(int Index, string? Name, string? ArgumentsPiece);

/// <summary>
/// Streams the calls of a reply that the tool-call grammar forces to be calls only (tool_choice required or a named
/// function), as the reply grows: each call object's "name" as soon as its string is complete, then the arguments
/// value's text as it is written, piece by piece, exactly as <see cref="ToolCallSyntax.Parse"/> later returns it.
/// Markers, list brackets and separators between call objects are skipped. It scans characters (strings, escapes,
/// nesting) and does not validate: the grammar already guarantees the shape. Qwen3-Coder's XML calls
/// (<see cref="ForQwenXml"/>) stream each name once its <c>&lt;function=NAME&gt;</c> is complete and the arguments whole
/// at its <c>&lt;/function&gt;</c>: their JSON depends on every value's type, so it is known only then.
/// </summary>
public sealed class ForcedCallStream(string argumentsKey)
{
    private Func<string, string>? _xmlArguments; // a complete XML call block -> its arguments' JSON
    private int _xmlFunctionStart = -1;          // where the current XML call's "<function=" starts
    private int _xmlScan;                        // inside the current XML call: where its next parameter or end may start

    /// <summary>A stream of forced Qwen3-Coder XML calls, parsed as <see cref="ToolCallSyntax.Parse"/> would.</summary>
    public static ForcedCallStream ForQwenXml(IReadOnlySet<string> names, IReadOnlyDictionary<string, IReadOnlySet<string>>? jsonValued) => new("arguments")
    {
        _xmlArguments = block => QwenXmlToolCalls.Parse(block, block, names, jsonValued) is { Calls: [var call] } ? call.ArgumentsJson : "{}",
    };

    private readonly StringBuilder _text = new();
    private int _at;                 // next character to scan
    private bool _inCall;            // inside a call object (after its '{')
    private string? _key;            // the member being read (after its key)
    private bool _expectKey = true;  // inside a call: the next string is a key
    private int _argumentsStart = -1, _argumentsDepth, _argumentsShown;
    private bool _argumentsInString, _argumentsEscape;
    private int _index = -1;

    /// <summary>Calls begun so far.</summary>
    public int Calls => _index + 1;

    /// <summary>Adds the next piece of the reply; returns what it completed.</summary>
    public List<ToolCallDelta> Push(string piece)
    {
        _text.Append(piece);
        var deltas = new List<ToolCallDelta>();
        if (_xmlArguments is not null)
        {
            ScanXml(deltas);
            return deltas;
        }
        while (_at < _text.Length)
        {
            if (_argumentsStart >= 0)
            {
                if (!ScanArguments(deltas)) break;
                continue;
            }
            char c = _text[_at];
            if (!_inCall)
            {
                if (c == '{')
                {
                    _inCall = true;
                    _expectKey = true;
                    _key = null;
                }
                _at++;
                continue;
            }
            switch (c)
            {
                case '"':
                    int end = StringEnd(_at);
                    if (end < 0) return deltas; // the string is not complete yet
                    string value = JsonSerializer.Deserialize<string>(_text.ToString(_at, end - _at))!;
                    _at = end;
                    if (_expectKey)
                    {
                        _key = value;
                        _expectKey = false;
                    }
                    else if (_key == "name")
                    {
                        _index++;
                        deltas.Add(new ToolCallDelta(_index, value, null));
                    }
                    break;
                case ',':
                    _expectKey = true;
                    _at++;
                    break;
                case '}':
                    _inCall = false;
                    _at++;
                    break;
                case '{' or '[' when !_expectKey && (_key == argumentsKey || _key is "arguments" or "parameters"):
                    _argumentsStart = _argumentsShown = _at;
                    _argumentsDepth = 0;
                    _argumentsInString = _argumentsEscape = false;
                    break;
                default:
                    _at++;
                    break;
            }
        }
        if (_argumentsStart >= 0 && _at > _argumentsShown && _index >= 0)
        {
            deltas.Add(new ToolCallDelta(_index, null, _text.ToString(_argumentsShown, _at - _argumentsShown)));
            _argumentsShown = _at;
        }
        return deltas;
    }

    private void ScanXml(List<ToolCallDelta> deltas)
    {
        const string functionOpen = "<function=", functionClose = "</function>", parameterOpen = "<parameter=", parameterClose = "</parameter>";
        string text = _text.ToString();
        while (true)
        {
            if (_xmlFunctionStart < 0)
            {
                int start = text.IndexOf(functionOpen, _at, StringComparison.Ordinal);
                int nameEnd = start < 0 ? -1 : text.IndexOf('>', start);
                if (nameEnd < 0) return;
                _index++;
                deltas.Add(new ToolCallDelta(_index, text[(start + functionOpen.Length)..nameEnd].Trim(), null));
                _xmlFunctionStart = start;
                _xmlScan = _at = nameEnd + 1;
                continue;
            }
            int at = _xmlScan;
            while (at < text.Length && char.IsWhiteSpace(text[at])) at++;
            if (text.AsSpan(at).StartsWith(functionClose, StringComparison.Ordinal))
            {
                int end = at + functionClose.Length;
                deltas.Add(new ToolCallDelta(_index, null, _xmlArguments!(QwenXmlToolCalls.Open + "\n" + text[_xmlFunctionStart..end])));
                _xmlFunctionStart = -1;
                _at = end;
                continue;
            }
            if (!text.AsSpan(at).StartsWith(parameterOpen, StringComparison.Ordinal)) return; // not written yet
            int keyEnd = text.IndexOf('>', at);
            int valueEnd = keyEnd < 0 ? -1 : text.IndexOf(parameterClose, keyEnd + 1, StringComparison.Ordinal);
            if (valueEnd < 0) return;
            _xmlScan = _at = valueEnd + parameterClose.Length;
        }
    }

    // Scans the arguments value; true when it ended (its last piece added), false when the text ran out inside it.
    private bool ScanArguments(List<ToolCallDelta> deltas)
    {
        while (_at < _text.Length)
        {
            char c = _text[_at++];
            if (_argumentsInString)
            {
                if (_argumentsEscape) _argumentsEscape = false;
                else if (c == '\\') _argumentsEscape = true;
                else if (c == '"') _argumentsInString = false;
                continue;
            }
            if (c == '"') _argumentsInString = true;
            else if (c is '{' or '[') _argumentsDepth++;
            else if (c is '}' or ']' && --_argumentsDepth == 0)
            {
                if (_index >= 0) deltas.Add(new ToolCallDelta(_index, null, _text.ToString(_argumentsShown, _at - _argumentsShown)));
                _argumentsStart = -1;
                return true;
            }
        }
        return false;
    }

    // The index after the closing quote of the string that starts at 'start', or -1 if it has not ended yet.
    private int StringEnd(int start)
    {
        for (int i = start + 1; i < _text.Length; i++)
        {
            if (_text[i] == '\\') { i++; continue; }
            if (_text[i] == '"') return i + 1;
        }
        return -1;
    }
}
