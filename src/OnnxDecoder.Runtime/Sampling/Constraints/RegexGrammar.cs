using System.Text;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// A regular-expression subset compiled to a byte grammar; the whole output must match (anchored
/// at both ends; a leading ^ and trailing $ are accepted and change nothing). The subset, with the
/// meaning of .NET's Regex under RegexOptions.ECMAScript: literal characters (any Unicode),
/// escaped metacharacters, \n \t \r \f \v, \d \w \s and \D \W \S (ASCII classes), classes [a-z_]
/// and negated [^...] with ASCII members, '.' (any character but \n), groups (...) and (?:...),
/// alternation |, and the quantifiers * + ? {m} {m,} {m,n} (greedy only, bounds up to 1000).
/// '.', negated classes and \D \W \S match characters of the Basic Multilingual Plane (one UTF-16
/// unit each, as .NET counts them). Anything else (backreferences, lookaround, \b, lazy
/// quantifiers, Unicode categories) is refused with its position.
/// </summary>
public static class RegexGrammar
{
    private const int MaxBound = 1000;

    public static Grammar Compile(string pattern)
    {
        var parser = new Parser(pattern);
        var node = parser.ParseWhole();
        return new Grammar { Description = $"regex /{pattern}/" }.WithRoot(node);
    }

    /// <summary>
    /// A JSON Schema <c>pattern</c>: the string contents (between the quotes) that contain a match
    /// of the pattern somewhere, as ECMA-262's search does; a leading ^ or trailing $ anchors that side.
    /// Characters the match writes that JSON must escape (", \, control characters) are written escaped;
    /// the unanchored text around the match is any JSON string content.
    /// </summary>
    public static GrammarNode JsonStringPattern(string pattern) => Search(pattern, EscapeForJsonString, JsonGrammar.StringCharacter);

    /// <summary>
    /// A JSON Schema <c>pattern</c> over raw text (UTF-8, nothing escaped): the texts that contain a match somewhere, as
    /// <see cref="JsonStringPattern"/> means it; the unanchored text around the match is any characters.
    /// </summary>
    public static GrammarNode TextPattern(string pattern) => Search(pattern, node => node, Alt(Bytes(Ascii), JsonGrammar.Utf8NonAscii()));

    private static GrammarNode Search(string pattern, Func<GrammarNode, GrammarNode> write, GrammarNode character)
    {
        var parser = new Parser(pattern);
        var node = write(parser.ParseWhole());
        if (parser.TopLevelChoices > 1 && (parser.AnchoredStart || parser.AnchoredEnd))
            throw new GrammarException($"regex /{pattern}/: an anchor beside a top-level '|' binds to one alternative only: group the alternatives, e.g. ^(a|b)$");
        var anything = Repeat(character, 0, -1);
        return Seq(parser.AnchoredStart ? Empty : anything, node, parser.AnchoredEnd ? Empty : anything);
    }

    private static readonly ByteSet MustEscape = ByteSet.Range(0, 0x1F).Union(ByteSet.Of((byte)'"', (byte)'\\'));

    // Byte classes of the regex grammar (ASCII members, UTF-8 sequences), with JSON's escapes for the bytes that need one.
    private static GrammarNode EscapeForJsonString(GrammarNode node) => node switch
    {
        ByteNode b when b.Set.Intersect(MustEscape).IsEmpty => b,
        ByteNode b => Alt([Bytes(b.Set.Minus(MustEscape)), .. Enumerable.Range(0, 0x80).Where(c => b.Set.Contains((byte)c) && MustEscape.Contains((byte)c))
            .Select(c => Literal(c switch
            {
                '"' => "\\\"", '\\' => "\\\\", '\n' => "\\n", '\t' => "\\t", '\r' => "\\r", '\f' => "\\f", '\b' => "\\b",
                _ => $"\\u{c:x4}",
            }))]),
        SeqNode seq => Seq([.. seq.Items.Select(EscapeForJsonString)]),
        AltNode alt => Alt([.. alt.Choices.Select(EscapeForJsonString)]),
        RepeatNode repeat => Repeat(EscapeForJsonString(repeat.Item), repeat.Min, repeat.Max),
        _ => throw new ArgumentException($"unexpected regex grammar node {node.GetType().Name}", nameof(node)),
    };

    private static readonly ByteSet Digits = ByteSet.Range('0', '9');
    private static readonly ByteSet Word = Digits.Union(ByteSet.Range('a', 'z')).Union(ByteSet.Range('A', 'Z')).Union(ByteSet.Of((byte)'_'));
    private static readonly ByteSet Space = ByteSet.Of((byte)' ', (byte)'\t', (byte)'\n', (byte)'\r', 0x0B, 0x0C);
    private static readonly ByteSet Ascii = ByteSet.Range(0, 0x7F);

    /// <summary>Any character outside <paramref name="excluded"/> (ASCII members): ASCII bytes, or a 2- or 3-byte UTF-8 character.</summary>
    private static GrammarNode AnyExcept(ByteSet excluded)
    {
        var c = Bytes(ByteSet.Range(0x80, 0xBF));
        return Alt(
            Bytes(Ascii.Minus(excluded)),
            Seq(Bytes(ByteSet.Range(0xC2, 0xDF)), c),
            Seq(Bytes(ByteSet.Of(0xE0)), Bytes(ByteSet.Range(0xA0, 0xBF)), c),
            Seq(Bytes(ByteSet.Range(0xE1, 0xEC).Union(ByteSet.Range(0xEE, 0xEF))), c, c),
            Seq(Bytes(ByteSet.Of(0xED)), Bytes(ByteSet.Range(0x80, 0x9F)), c));
    }

    private sealed class Parser(string pattern)
    {
        private int _at;

        public bool AnchoredStart { get; private set; }
        public bool AnchoredEnd { get; private set; }
        /// <summary>Alternatives of the outermost '|' (1: none).</summary>
        public int TopLevelChoices { get; private set; }

        private GrammarException Error(string what) => new($"regex /{pattern}/ at {_at}: {what}");

        public GrammarNode ParseWhole()
        {
            if (Peek('^'))
            {
                _at++;
                AnchoredStart = true;
            }
            var node = ParseAlternation(out int choices);
            TopLevelChoices = choices;
            if (_at < pattern.Length && pattern[_at] == '$' && _at == pattern.Length - 1)
            {
                _at++;
                AnchoredEnd = true;
            }
            if (_at < pattern.Length) throw Error(pattern[_at] == ')' ? "unbalanced ')'" : $"'{pattern[_at]}' is not supported here (^ and $ only at the ends)");
            return node;
        }

        private bool Peek(char c) => _at < pattern.Length && pattern[_at] == c;

        private GrammarNode ParseAlternation() => ParseAlternation(out _);

        private GrammarNode ParseAlternation(out int count)
        {
            var choices = new List<GrammarNode> { ParseConcatenation() };
            while (Peek('|'))
            {
                _at++;
                choices.Add(ParseConcatenation());
            }
            count = choices.Count;
            return Alt([.. choices]);
        }

        private GrammarNode ParseConcatenation()
        {
            var items = new List<GrammarNode>();
            while (_at < pattern.Length && pattern[_at] is not ('|' or ')'))
            {
                if (pattern[_at] == '$' && _at == pattern.Length - 1) break;
                items.Add(ParseQuantified(ParseAtom()));
            }
            return Seq([.. items]);
        }

        private GrammarNode ParseQuantified(GrammarNode atom)
        {
            while (_at < pattern.Length)
            {
                char c = pattern[_at];
                int min, max;
                if (c == '*') (min, max) = (0, -1);
                else if (c == '+') (min, max) = (1, -1);
                else if (c == '?') (min, max) = (0, 1);
                else if (c == '{' && TryBounds(out min, out max)) { }
                else break;
                _at++;
                if (Peek('?') || Peek('+')) throw Error("lazy and possessive quantifiers are not supported");
                atom = Repeat(atom, min, max);
            }
            return atom;
        }

        // {m}, {m,}, {m,n}: leaves _at on the closing brace.
        private bool TryBounds(out int min, out int max)
        {
            min = max = 0;
            int close = pattern.IndexOf('}', _at);
            if (close < 0) return false;
            var parts = pattern[(_at + 1)..close].Split(',');
            if (parts.Length > 2 || !int.TryParse(parts[0], out min)) return false;
            if (parts.Length == 1) max = min;
            else if (parts[1].Length == 0) max = -1;
            else if (!int.TryParse(parts[1], out max)) return false;
            if (min < 0 || min > MaxBound || max > MaxBound || (max >= 0 && max < min)) throw Error($"bounds {{{pattern[(_at + 1)..close]}}} must satisfy 0 <= m <= n <= {MaxBound}");
            _at = close;
            return true;
        }

        private GrammarNode ParseAtom()
        {
            char c = pattern[_at];
            switch (c)
            {
                case '(':
                    _at++;
                    if (Peek('?'))
                    {
                        if (_at + 1 < pattern.Length && pattern[_at + 1] == ':') _at += 2;
                        else throw Error("only (?:...) groups are supported (no lookaround, named groups or options)");
                    }
                    var inner = ParseAlternation();
                    if (!Peek(')')) throw Error("missing ')'");
                    _at++;
                    return inner;
                case '[':
                    return ParseClass();
                case '.':
                    _at++;
                    return AnyExcept(ByteSet.Of((byte)'\n'));
                case '\\':
                    _at++;
                    return ParseEscape(inClass: false, out _) ?? throw Error("unreachable");
                case '*' or '+' or '?' or '{':
                    throw Error($"quantifier '{c}' has nothing to repeat");
                case '^' or '$':
                    throw Error($"'{c}' is supported only at the ends of the pattern");
                default:
                    return LiteralCharacter();
            }
        }

        private GrammarNode LiteralCharacter()
        {
            int length = char.IsHighSurrogate(pattern[_at]) && _at + 1 < pattern.Length ? 2 : 1;
            var text = pattern.Substring(_at, length);
            _at += length;
            return Literal(text);
        }

        // After a backslash. In a class, a single ASCII member comes back through `single` (the node is null).
        private GrammarNode? ParseEscape(bool inClass, out ByteSet single)
        {
            single = ByteSet.Empty;
            if (_at >= pattern.Length) throw Error("the pattern ends in a lone backslash");
            char e = pattern[_at++];
            ByteSet? set = e switch
            {
                'd' => Digits, 'w' => Word, 's' => Space,
                'n' => ByteSet.Of((byte)'\n'), 't' => ByteSet.Of((byte)'\t'), 'r' => ByteSet.Of((byte)'\r'),
                'f' => ByteSet.Of(0x0C), 'v' => ByteSet.Of(0x0B),
                _ when e < 0x80 && !char.IsLetterOrDigit(e) => ByteSet.Of((byte)e),
                _ => null,
            };
            if (e is 'D' or 'W' or 'S')
            {
                if (inClass) throw Error($"\\{e} inside a class is not supported");
                return AnyExcept(e == 'D' ? Digits : e == 'W' ? Word : Space);
            }
            if (set is null) throw Error($"escape \\{e} is not supported");
            single = set.Value;
            return inClass ? null : Bytes(set.Value);
        }

        private GrammarNode ParseClass()
        {
            int start = _at++;
            bool negated = Peek('^');
            if (negated) _at++;
            var members = ByteSet.Empty;
            bool first = true;
            while (_at < pattern.Length && (pattern[_at] != ']' || first))
            {
                first = false;
                var low = ClassMember(out bool isSet);
                if (!isSet && Peek('-') && _at + 1 < pattern.Length && pattern[_at + 1] != ']')
                {
                    _at++;
                    var high = ClassMember(out bool highIsSet);
                    int lo = First(low), hi = First(high);
                    if (highIsSet || hi < lo) throw Error("a class range must go from a character to a later one");
                    members = members.Union(ByteSet.Range(lo, hi));
                }
                else members = members.Union(low);
            }
            if (!Peek(']')) { _at = start; throw Error("missing ']'"); }
            _at++;
            return negated ? AnyExcept(members) : Bytes(members);
        }

        private ByteSet ClassMember(out bool isSet)
        {
            char c = pattern[_at];
            isSet = false;
            if (c == '\\')
            {
                _at++;
                char e = _at < pattern.Length ? pattern[_at] : '\\';
                ParseEscape(inClass: true, out var single);
                isSet = e is 'd' or 'w' or 's';
                return single;
            }
            if (c >= 0x80) throw Error($"class member '{c}' is not ASCII: classes hold ASCII characters only (use alternation for others)");
            _at++;
            return ByteSet.Of((byte)c);
        }

        private static int First(ByteSet set)
        {
            for (int b = 0; b < 256; b++) if (set.Contains((byte)b)) return b;
            return -1;
        }
    }
}
