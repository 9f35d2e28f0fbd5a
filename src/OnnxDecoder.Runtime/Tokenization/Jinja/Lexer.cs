using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

internal enum TokenKind { Data, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Text, int Line, int Column, object? Value = null)
{
    public bool Is(TokenKind kind, string text) => Kind == kind && Text == text;

    public bool IsName(string name) => Kind == TokenKind.Name && Text == name;

    public bool IsOperator(string op) => Kind == TokenKind.Operator && Text == op;

    public override string ToString() => Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.Data => "template text",
        TokenKind.String => "string literal",
        _ => $"'{Text}'",
    };
}

/// <summary>
/// Splits a template into text and tag tokens exactly as Jinja2's lexer does with transformers' settings:
/// newlines normalised to \n and one trailing newline dropped, <c>-</c> strips the whitespace beside a tag,
/// trim_blocks drops the newline after a block or comment tag, lstrip_blocks drops the spaces and tabs
/// before a block or comment tag that starts its line (<c>+</c> keeps them), and raw blocks stay text.
/// </summary>
internal sealed class Lexer
{
    private static readonly string[] Operators =
        ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "[", "]", "(", ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";"];

    private readonly string source;
    private readonly string templateName;
    private readonly List<Token> tokens = [];
    private readonly int[] lineStarts;

    private Lexer(string source, string templateName)
    {
        this.source = source;
        this.templateName = templateName;
        var starts = new List<int> { 0 };
        for (int i = 0; i < source.Length; i++)
            if (source[i] == '\n') starts.Add(i + 1);
        lineStarts = [.. starts];
    }

    public static List<Token> Tokenize(string source, string templateName)
    {
        string normalized = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (normalized.EndsWith('\n')) normalized = normalized[..^1];
        var lexer = new Lexer(normalized, templateName);
        lexer.Run();
        return lexer.tokens;
    }

    private (int Line, int Column) Where(int position)
    {
        int index = Array.BinarySearch(lineStarts, position);
        if (index < 0) index = ~index - 1;
        return (index + 1, position - lineStarts[index] + 1);
    }

    private TemplateError Error(int position, string message)
    {
        var (line, column) = Where(position);
        return new TemplateError(templateName, line, column, message);
    }

    private void Add(TokenKind kind, string text, int position, object? value = null)
    {
        var (line, column) = Where(position);
        tokens.Add(new Token(kind, text, line, column, value));
    }

    private void Run()
    {
        int position = 0;
        bool lineStarting = true;
        while (position < source.Length)
        {
            int tag = FindTagStart(position);
            if (tag < 0)
            {
                Add(TokenKind.Data, source[position..], position);
                break;
            }
            char kind = source[tag + 1];
            char sign = tag + 2 < source.Length ? source[tag + 2] : '\0';
            string text = source[position..tag];
            if (sign == '-')
            {
                text = text.TrimEnd(PythonWhitespace);
            }
            else if (sign != '+' && kind != '{')
            {
                int lineStart = text.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || lineStarting) && lineStart < text.Length && text.AsSpan(lineStart).IndexOfAnyExcept(PythonWhitespace) < 0)
                    text = text[..lineStart];
            }
            if (text.Length > 0) Add(TokenKind.Data, text, position);
            int bodyStart = tag + 2 + (sign is '-' or '+' ? 1 : 0);
            int end = kind switch
            {
                '#' => Comment(tag, bodyStart),
                '{' => Expression(tag, bodyStart, "}}", TokenKind.VariableBegin, TokenKind.VariableEnd),
                _ => RawBlock(tag, bodyStart) ?? Expression(tag, bodyStart, "%}", TokenKind.BlockBegin, TokenKind.BlockEnd),
            };
            lineStarting = end > 0 && source[end - 1] == '\n';
            position = end;
        }
        Add(TokenKind.End, "", source.Length);
    }

    internal static readonly char[] PythonWhitespace = [' ', '\t', '\n', '\r', '\v', '\f', '\u001c', '\u001d', '\u001e', '\u001f', '\u0085',
        '\u00a0', '\u1680', '\u2000', '\u2001', '\u2002', '\u2003', '\u2004', '\u2005', '\u2006', '\u2007', '\u2008', '\u2009', '\u200a',
        '\u2028', '\u2029', '\u202f', '\u205f', '\u3000'];

    private int FindTagStart(int from)
    {
        for (int i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
            if (source[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Skips a comment; returns the position after it (and after the whitespace a -#} or trim_blocks removes).</summary>
    private int Comment(int tag, int bodyStart)
    {
        int close = source.IndexOf("#}", bodyStart, StringComparison.Ordinal);
        if (close < 0) throw Error(tag, "comment {# is never closed with #}");
        int end = close + 2;
        if (close > bodyStart && source[close - 1] == '-') return SkipWhitespace(end);
        if (close > bodyStart && source[close - 1] == '+') return end;
        return end < source.Length && source[end] == '\n' ? end + 1 : end;
    }

    private int SkipWhitespace(int from)
    {
        while (from < source.Length && Array.IndexOf(PythonWhitespace, source[from]) >= 0) from++;
        return from;
    }

    /// <summary>{% raw %}...{% endraw %}: the inside is text. Returns null when the tag is not raw.</summary>
    private int? RawBlock(int tag, int bodyStart)
    {
        int i = SkipSpaces(bodyStart);
        if (string.CompareOrdinal(source, i, "raw", 0, 3) != 0) return null;
        i = SkipSpaces(i + 3);
        if (i < source.Length && source[i] is '-' or '+') i++;
        if (string.CompareOrdinal(source, i, "%}", 0, 2) != 0) return null;
        int contentStart = i + 2;
        if (source[i - 1] == '-') contentStart = SkipWhitespace(contentStart);
        else if (source[i - 1] != '+' && contentStart < source.Length && source[contentStart] == '\n') contentStart++;
        for (int search = contentStart; ; search++)
        {
            int open = source.IndexOf("{%", search, StringComparison.Ordinal);
            if (open < 0) throw Error(tag, "{% raw %} is never closed with {% endraw %}");
            int j = open + 2;
            bool stripBefore = j < source.Length && source[j] == '-';
            if (j < source.Length && source[j] is '-' or '+') j++;
            j = SkipSpaces(j);
            if (string.CompareOrdinal(source, j, "endraw", 0, 6) != 0) continue;
            j = SkipSpaces(j + 6);
            bool stripAfter = j < source.Length && source[j] == '-';
            if (j < source.Length && source[j] is '-' or '+') j++;
            if (string.CompareOrdinal(source, j, "%}", 0, 2) != 0) continue;
            string content = source[contentStart..open];
            if (stripBefore) content = content.TrimEnd(PythonWhitespace);
            if (content.Length > 0) Add(TokenKind.Data, content, contentStart);
            int end = j + 2;
            if (stripAfter) return SkipWhitespace(end);
            return end < source.Length && source[end] == '\n' ? end + 1 : end;
        }
    }

    private int SkipSpaces(int from)
    {
        while (from < source.Length && source[from] is ' ' or '\t' or '\n' or '\r') from++;
        return from;
    }

    /// <summary>Tokens of a {{ }} or {% %} tag; returns the position after its end (and the whitespace it removes).</summary>
    private int Expression(int tag, int bodyStart, string close, TokenKind begin, TokenKind finish)
    {
        Add(begin, source.Substring(tag, 2), tag);
        int depth = 0;
        int i = bodyStart;
        while (true)
        {
            while (i < source.Length && char.IsWhiteSpace(source[i])) i++;
            if (i >= source.Length) throw Error(tag, $"tag is never closed with {close}");
            if (depth == 0)
            {
                if (source[i] == '-' && string.CompareOrdinal(source, i + 1, close, 0, 2) == 0)
                {
                    Add(finish, close, i);
                    return SkipWhitespace(i + 3);
                }
                if (source[i] == '+' && close == "%}" && string.CompareOrdinal(source, i + 1, close, 0, 2) == 0)
                {
                    Add(finish, close, i);
                    return i + 3;
                }
                if (string.CompareOrdinal(source, i, close, 0, 2) == 0)
                {
                    Add(finish, close, i);
                    int end = i + 2;
                    return close == "%}" && end < source.Length && source[end] == '\n' ? end + 1 : end;
                }
            }
            char c = source[i];
            if (char.IsAsciiLetter(c) || c == '_')
            {
                int start = i;
                while (i < source.Length && (char.IsAsciiLetterOrDigit(source[i]) || source[i] == '_')) i++;
                Add(TokenKind.Name, source[start..i], start);
            }
            else if (char.IsAsciiDigit(c))
            {
                i = Number(i);
            }
            else if (c is '\'' or '"')
            {
                i = StringLiteral(i);
            }
            else
            {
                string? op = Operators.FirstOrDefault(o => string.CompareOrdinal(source, i, o, 0, o.Length) == 0);
                if (op is null) throw Error(i, $"unexpected character '{c}'");
                if (op is "(" or "[" or "{") depth++;
                else if (op is ")" or "]" or "}")
                {
                    if (depth == 0) throw Error(i, $"unexpected '{op}'");
                    depth--;
                }
                Add(TokenKind.Operator, op, i);
                i += op.Length;
            }
        }
    }

    private int Number(int start)
    {
        int i = start;
        while (i < source.Length && (char.IsAsciiDigit(source[i]) || (source[i] == '_' && i + 1 < source.Length && char.IsAsciiDigit(source[i + 1])))) i++;
        bool isFloat = false;
        if (i + 1 < source.Length && source[i] == '.' && char.IsAsciiDigit(source[i + 1]) && (start == 0 || source[start - 1] != '.'))
        {
            isFloat = true;
            i++;
            while (i < source.Length && (char.IsAsciiDigit(source[i]) || (source[i] == '_' && i + 1 < source.Length && char.IsAsciiDigit(source[i + 1])))) i++;
        }
        if (i < source.Length && source[i] is 'e' or 'E' && (start == 0 || source[start - 1] != '.'))
        {
            int j = i + 1;
            if (j < source.Length && source[j] is '+' or '-') j++;
            if (j < source.Length && char.IsAsciiDigit(source[j]))
            {
                isFloat = true;
                i = j;
                while (i < source.Length && char.IsAsciiDigit(source[i])) i++;
            }
        }
        string text = source[start..i].Replace("_", "");
        if (isFloat)
        {
            Add(TokenKind.Float, text, start, double.Parse(text, CultureInfo.InvariantCulture));
        }
        else
        {
            if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value))
                throw Error(start, $"integer literal {text} is beyond 64 bits");
            Add(TokenKind.Integer, text, start, value);
        }
        return i;
    }

    /// <summary>A quoted string with Python's unicode-escape decoding (\n, \t, \xHH, \uXXXX; unknown escapes kept).</summary>
    private int StringLiteral(int start)
    {
        char quote = source[start];
        var builder = new StringBuilder();
        int i = start + 1;
        while (true)
        {
            if (i >= source.Length) throw Error(start, "string literal is never closed");
            char c = source[i];
            if (c == quote) break;
            if (c != '\\' || i + 1 >= source.Length)
            {
                builder.Append(c);
                i++;
                continue;
            }
            char e = source[i + 1];
            i += 2;
            switch (e)
            {
                case 'n': builder.Append('\n'); break;
                case 't': builder.Append('\t'); break;
                case 'r': builder.Append('\r'); break;
                case '\\': builder.Append('\\'); break;
                case '\'': builder.Append('\''); break;
                case '"': builder.Append('"'); break;
                case 'a': builder.Append('\a'); break;
                case 'b': builder.Append('\b'); break;
                case 'f': builder.Append('\f'); break;
                case 'v': builder.Append('\v'); break;
                case '\n': break;
                case 'x': i = HexEscape(builder, i, 2, start); break;
                case 'u': i = HexEscape(builder, i, 4, start); break;
                case 'U': i = HexEscape(builder, i, 8, start); break;
                default: builder.Append('\\').Append(e); break;
            }
        }
        Add(TokenKind.String, source[start..(i + 1)], start, builder.ToString());
        return i + 1;
    }

    private int HexEscape(StringBuilder builder, int at, int digits, int literalStart)
    {
        if (at + digits > source.Length || !int.TryParse(source.AsSpan(at, digits), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code)
            || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF && digits == 8))
            throw Error(literalStart, $"string literal has a malformed \\{(digits == 2 ? 'x' : digits == 4 ? 'u' : 'U')} escape");
        if (code >= 0xD800 && code <= 0xDFFF) builder.Append((char)code);
        else builder.Append(char.ConvertFromUtf32(code));
        return at + digits;
    }
}
