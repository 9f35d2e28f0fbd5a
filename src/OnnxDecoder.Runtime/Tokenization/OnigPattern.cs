using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// A tokenizer.json regex (Hugging Face runs them with Oniguruma / fancy-regex) as a .NET Regex
/// that matches per code point, as Oniguruma does. Two differences need care:
/// <list type="bullet">
/// <item>Syntax: possessive quantifiers (<c>x++</c>, <c>x*+</c>, <c>x?+</c>) become atomic groups,
/// <c>\h</c> (hex digit), <c>\x{...}</c>, <c>\p{^X}</c>, POSIX brackets and a Unicode <c>\w</c> are
/// rewritten; <c>^</c>/<c>$</c> are line anchors (Ruby syntax), so the regex runs Multiline.</item>
/// <item>Astral characters: .NET classes look at UTF-16 units, so <c>[^\s\p{L}]?\p{L}+</c> would
/// take half an emoji. Matching runs on a copy of the text where each surrogate pair is one BMP
/// stand-in of the same Unicode category, and match bounds map back to the text.</item>
/// </list>
/// Compiled patterns are shared process-wide: loading the same tokenizer twice compiles nothing.
/// </summary>
public sealed class OnigPattern
{
    private static readonly ConcurrentDictionary<string, Regex> Compiled = new(StringComparer.Ordinal);
    private readonly Regex? _regex;
    private readonly string? _literal;

    private OnigPattern(Regex regex) => _regex = regex;

    private OnigPattern(string literal) => _literal = literal;

    /// <summary>Translates <paramref name="pattern"/>; an unsupported construct throws
    /// <see cref="ArgumentException"/> naming it (the loader adds the file and field).</summary>
    public static OnigPattern Create(string pattern) =>
        new(Compiled.GetOrAdd(pattern, p => new Regex(Translate(p), RegexOptions.Compiled | RegexOptions.CultureInvariant | RegexOptions.Multiline, MatchTimeout)));

    // A hostile file's pattern may backtrack catastrophically: a match gives up rather than hang.
    private static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(10);

    /// <summary>A literal string pattern (tokenizer.json's {"String": ...}).</summary>
    public static OnigPattern Literal(string text) => new(text);

    /// <summary>Non-overlapping matches, left to right, as (start, end) UTF-16 offsets into <paramref name="text"/>.</summary>
    public List<(int Start, int End)> Matches(string text)
    {
        var result = new List<(int, int)>();
        if (text.Length == 0) return result;
        if (_literal is not null)
        {
            if (_literal.Length == 0) return result;
            for (int at = text.IndexOf(_literal, StringComparison.Ordinal); at >= 0; at = text.IndexOf(_literal, at + _literal.Length, StringComparison.Ordinal))
                result.Add((at, at + _literal.Length));
            return result;
        }
        int firstSurrogate = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (firstSurrogate < 0)
        {
            for (var m = _regex!.Match(text); m.Success; m = m.NextMatch())
                if (m.Length > 0) result.Add((m.Index, m.Index + m.Length));
            return result;
        }
        var (standIn, offsets) = WithStandIns(text, firstSurrogate);
        for (var m = _regex!.Match(standIn); m.Success; m = m.NextMatch())
            if (m.Length > 0) result.Add((offsets[m.Index], offsets[m.Index + m.Length]));
        return result;
    }

    public string Replace(string text, string replacement)
    {
        if (_literal is not null) return _literal.Length == 0 ? text : text.Replace(_literal, replacement, StringComparison.Ordinal);
        var matches = Matches(text);
        if (matches.Count == 0) return text;
        var builder = new StringBuilder(text.Length);
        int previous = 0;
        foreach (var (start, end) in matches)
        {
            builder.Append(text, previous, start - previous).Append(replacement);
            previous = end;
        }
        return builder.Append(text, previous, text.Length - previous).ToString();
    }

    /// <summary>The text with each surrogate pair replaced by one BMP character of the same general
    /// category, and for each stand-in index (plus the end) its offset in the text.</summary>
    private static (string StandIn, int[] Offsets) WithStandIns(string text, int firstSurrogate)
    {
        var builder = new StringBuilder(text.Length);
        var offsets = new List<int>(text.Length + 1);
        builder.Append(text, 0, firstSurrogate);
        for (int i = 0; i < firstSurrogate; i++) offsets.Add(i);
        for (int i = firstSurrogate; i < text.Length;)
        {
            offsets.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                builder.Append(StandInFor(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]))));
                i += 2;
            }
            else
            {
                builder.Append(char.IsSurrogate(text[i]) ? '\uFFFD' : text[i]);
                i++;
            }
        }
        offsets.Add(text.Length);
        return (builder.ToString(), [.. offsets]);
    }

    /// <summary>A BMP character of each general category (astral code points are never whitespace).</summary>
    private static char StandInFor(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => 'A',
        UnicodeCategory.LowercaseLetter => 'a',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u00AA',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '0',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.ConnectorPunctuation => '_',
        UnicodeCategory.DashPunctuation => '-',
        UnicodeCategory.OpenPunctuation => '(',
        UnicodeCategory.ClosePunctuation => ')',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '!',
        UnicodeCategory.MathSymbol => '+',
        UnicodeCategory.CurrencySymbol => '$',
        UnicodeCategory.ModifierSymbol => '^',
        UnicodeCategory.OtherSymbol => '\u00A9',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        _ => '\u0378', // unassigned
    };

    private static readonly Dictionary<string, string> PosixClasses = new(StringComparer.Ordinal)
    {
        ["alpha"] = @"\p{L}\p{M}", ["digit"] = @"\p{Nd}", ["alnum"] = @"\p{L}\p{M}\p{Nd}", ["space"] = @"\s", ["upper"] = @"\p{Lu}",
        ["lower"] = @"\p{Ll}", ["punct"] = @"\p{P}", ["xdigit"] = "0-9A-Fa-f", ["cntrl"] = @"\p{Cc}", ["blank"] = @"\p{Zs}\t",
    };

    private const string WordClass = @"\p{L}\p{M}\p{N}\p{Pc}";

    /// <summary>Oniguruma (Ruby syntax) to .NET regex syntax.</summary>
    internal static string Translate(string pattern)
    {
        var output = new StringBuilder(pattern.Length + 16);
        // Where the last complete atom starts in the output, for wrapping "atom quantifier +".
        int lastAtom = -1;
        var groupStarts = new Stack<int>();
        for (int i = 0; i < pattern.Length;)
        {
            char c = pattern[i];
            int atomStart = output.Length;
            switch (c)
            {
                case '\\':
                    i = TranslateEscape(pattern, i, output, inClass: false);
                    lastAtom = atomStart;
                    continue;
                case '[':
                    i = TranslateClass(pattern, i, output);
                    lastAtom = atomStart;
                    continue;
                case '(':
                    groupStarts.Push(output.Length);
                    output.Append(c);
                    i++;
                    if (i < pattern.Length && pattern[i] == '?')
                    {
                        // (?i: (?: (?= (?! (?<= (?<! (?> (?<name> pass through; Oniguruma's absent operator (?~ does not.
                        if (i + 1 < pattern.Length && pattern[i + 1] == '~') throw new ArgumentException("the absent operator (?~...) has no .NET equivalent");
                    }
                    lastAtom = -1;
                    continue;
                case ')':
                    output.Append(c);
                    i++;
                    lastAtom = groupStarts.Count > 0 ? groupStarts.Pop() : throw new ArgumentException("unbalanced ')'");
                    continue;
                case '*' or '+' or '?' or '{':
                {
                    int end = QuantifierEnd(pattern, i);
                    if (end < 0)
                    {
                        output.Append(c); // a literal '{'
                        i++;
                        lastAtom = atomStart;
                        continue;
                    }
                    string quantifier = pattern[i..end];
                    i = end;
                    if (i < pattern.Length && pattern[i] == '+' && lastAtom >= 0 && c == '{')
                    {
                        // Ruby syntax: x{n,m}+ is not possessive but (x{n,m})+.
                        output.Insert(lastAtom, "(?:").Append(quantifier).Append(")+");
                        i++;
                    }
                    else if (i < pattern.Length && pattern[i] == '+' && lastAtom >= 0 && quantifier is "*" or "+" or "?")
                    {
                        // Possessive: x*+ is (?>x*).
                        output.Insert(lastAtom, "(?>").Append(quantifier).Append(')');
                        i++;
                    }
                    else output.Append(quantifier);
                    lastAtom = -1;
                    continue;
                }
                default:
                    output.Append(c);
                    i++;
                    lastAtom = c is '|' or '^' or '$' ? -1 : atomStart;
                    continue;
            }
        }
        return output.ToString();
    }

    /// <summary>End of a quantifier starting at <paramref name="i"/> (including a lazy '?'), or -1
    /// for a '{' that is a literal.</summary>
    private static int QuantifierEnd(string pattern, int i)
    {
        int end;
        if (pattern[i] == '{')
        {
            int close = pattern.IndexOf('}', i);
            if (close < 0) return -1;
            string body = pattern[(i + 1)..close];
            if (body.Length == 0 || !body.All(ch => char.IsAsciiDigit(ch) || ch == ',') || body.Count(ch => ch == ',') > 1 || body[0] == ',' && body.Length == 1) return -1;
            end = close + 1;
        }
        else end = i + 1;
        if (end < pattern.Length && pattern[end] == '?') end++;
        return end;
    }

    private static int TranslateEscape(string pattern, int i, StringBuilder output, bool inClass)
    {
        if (i + 1 >= pattern.Length) throw new ArgumentException("the pattern ends in a lone backslash");
        char e = pattern[i + 1];
        switch (e)
        {
            case 'h': output.Append(inClass ? "0-9A-Fa-f" : "[0-9A-Fa-f]"); return i + 2;
            case 'H': if (inClass) throw new ArgumentException(@"\H inside a character class is not supported"); output.Append("[^0-9A-Fa-f]"); return i + 2;
            case 'w': output.Append(inClass ? WordClass : $"[{WordClass}]"); return i + 2;
            case 'W': if (inClass) throw new ArgumentException(@"\W inside a character class is not supported"); output.Append($"[^{WordClass}]"); return i + 2;
            case 'x' when i + 2 < pattern.Length && pattern[i + 2] == '{':
            {
                int close = pattern.IndexOf('}', i);
                if (close < 0 || !int.TryParse(pattern.AsSpan(i + 3, close - i - 3), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code) || code > 0xFFFF)
                    throw new ArgumentException($"escape '{pattern[i..Math.Min(pattern.Length, i + 10)]}' is not supported (code points above U+FFFF in patterns are not)");
                output.Append(CultureInfo.InvariantCulture, $"\\u{code:X4}");
                return close + 1;
            }
            case 'p' or 'P' when i + 2 < pattern.Length && pattern[i + 2] == '{':
            {
                int close = pattern.IndexOf('}', i);
                if (close < 0) throw new ArgumentException("unterminated \\p{...}");
                string name = pattern[(i + 3)..close];
                bool negate = e == 'P';
                if (name.StartsWith('^'))
                {
                    negate = !negate;
                    name = name[1..];
                }
                if (!IsGeneralCategory(name)) throw new ArgumentException($"\\p{{{name}}} (a script or property other than a general category) has no .NET equivalent");
                output.Append(negate ? "\\P{" : "\\p{").Append(name).Append('}');
                return close + 1;
            }
            case 'A' or 'z' or 'Z' or 'b' or 'B' or 's' or 'S' or 'd' or 'D' or 'n' or 'r' or 't' or 'f' or 'v' or 'e' or 'a' or 'u' or 'x' or 'G':
                output.Append('\\').Append(e);
                return i + 2;
            default:
                if (char.IsAsciiLetter(e)) throw new ArgumentException($"escape '\\{e}' is not supported");
                output.Append('\\').Append(e);
                return i + 2;
        }
    }

    private static int TranslateClass(string pattern, int i, StringBuilder output)
    {
        output.Append('[');
        i++;
        if (i < pattern.Length && pattern[i] == '^')
        {
            output.Append('^');
            i++;
        }
        if (i < pattern.Length && pattern[i] == ']')
        {
            output.Append(@"\]");
            i++;
        }
        while (i < pattern.Length)
        {
            char c = pattern[i];
            if (c == ']')
            {
                output.Append(']');
                return i + 1;
            }
            if (c == '\\')
            {
                i = TranslateEscape(pattern, i, output, inClass: true);
                continue;
            }
            if (c == '[' && i + 1 < pattern.Length && pattern[i + 1] == ':')
            {
                int close = pattern.IndexOf(":]", i, StringComparison.Ordinal);
                string name = close < 0 ? "" : pattern[(i + 2)..close];
                if (!PosixClasses.TryGetValue(name, out var replacement)) throw new ArgumentException($"POSIX class '[:{name}:]' is not supported");
                output.Append(replacement);
                i = close + 2;
                continue;
            }
            if (c == '[' || (c == '&' && i + 1 < pattern.Length && pattern[i + 1] == '&'))
                throw new ArgumentException("nested character classes and '&&' intersections are not supported");
            output.Append(c);
            i++;
        }
        throw new ArgumentException("unterminated character class");
    }

    private static bool IsGeneralCategory(string name) => name is "L" or "Lu" or "Ll" or "Lt" or "Lm" or "Lo" or "M" or "Mn" or "Mc" or "Me"
        or "N" or "Nd" or "Nl" or "No" or "P" or "Pc" or "Pd" or "Ps" or "Pe" or "Pi" or "Pf" or "Po" or "S" or "Sm" or "Sc" or "Sk" or "So"
        or "Z" or "Zs" or "Zl" or "Zp" or "C" or "Cc" or "Cf" or "Cs" or "Co" or "Cn";
}
