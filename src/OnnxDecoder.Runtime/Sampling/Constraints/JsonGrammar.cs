using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// The pieces of JSON (RFC 8259) as grammar nodes, for one <see cref="Grammar"/>. Whitespace is
/// bounded: at most <see cref="MaxWhitespace"/> bytes between two tokens of JSON, so a model
/// cannot spend its budget on spaces. Strings are valid UTF-8 (no raw control characters, no lone
/// surrogate escapes), so each character is one code point as JSON Schema's lengths count them.
/// Numbers are bounded in length (18 integer digits, 15 fraction digits, 2 exponent digits), so
/// every number written is a finite IEEE double (RFC 8259 section 6: what parsers interoperate on).
/// </summary>
public sealed class JsonGrammar(Grammar grammar, int maxWhitespace = JsonGrammar.DefaultMaxWhitespace)
{
    public const int DefaultMaxWhitespace = 2;
    private int? _valueRule;

    public Grammar Grammar { get; } = grammar;
    public int MaxWhitespace { get; } = maxWhitespace >= 0 ? maxWhitespace : throw new ArgumentOutOfRangeException(nameof(maxWhitespace));

    public GrammarNode Whitespace => Repeat(Bytes(ByteSet.Of((byte)' ', (byte)'\t', (byte)'\n', (byte)'\r')), 0, MaxWhitespace);

    private static readonly ByteSet Digit = ByteSet.Range('0', '9');
    private static readonly ByteSet Hex = Digit.Union(ByteSet.Range('a', 'f')).Union(ByteSet.Range('A', 'F'));
    private static readonly ByteSet Continuation = ByteSet.Range(0x80, 0xBF);

    /// <summary>One character of a JSON string's contents: plain ASCII, an escape, or a UTF-8 sequence.</summary>
    public static GrammarNode StringCharacter { get; } = Alt(
        Bytes(ByteSet.Range(0x20, 0x7F).Minus(ByteSet.Of((byte)'"', (byte)'\\'))),
        Seq(Bytes(ByteSet.Of((byte)'\\')), Alt(
            Bytes(ByteSet.Of((byte)'"', (byte)'\\', (byte)'/', (byte)'b', (byte)'f', (byte)'n', (byte)'r', (byte)'t')),
            Seq(Bytes(ByteSet.Of((byte)'u')), Alt(
                Seq(Bytes(Hex.Minus(ByteSet.Of((byte)'d', (byte)'D'))), Bytes(Hex), Bytes(Hex), Bytes(Hex)),
                Seq(Bytes(ByteSet.Of((byte)'d', (byte)'D')), Bytes(ByteSet.Range('0', '7')), Bytes(Hex), Bytes(Hex)))))),
        Utf8NonAscii());

    /// <summary>A non-ASCII code point as well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).</summary>
    public static GrammarNode Utf8NonAscii()
    {
        var c = Bytes(Continuation);
        return Alt(
            Seq(Bytes(ByteSet.Range(0xC2, 0xDF)), c),
            Seq(Bytes(ByteSet.Of(0xE0)), Bytes(ByteSet.Range(0xA0, 0xBF)), c),
            Seq(Bytes(ByteSet.Range(0xE1, 0xEC).Union(ByteSet.Range(0xEE, 0xEF))), c, c),
            Seq(Bytes(ByteSet.Of(0xED)), Bytes(ByteSet.Range(0x80, 0x9F)), c),
            Seq(Bytes(ByteSet.Of(0xF0)), Bytes(ByteSet.Range(0x90, 0xBF)), c, c),
            Seq(Bytes(ByteSet.Range(0xF1, 0xF3)), c, c, c),
            Seq(Bytes(ByteSet.Of(0xF4)), Bytes(ByteSet.Range(0x80, 0x8F)), c, c));
    }

    public static GrammarNode String(int minLength = 0, int maxLength = -1) =>
        Seq(Literal("\""), Repeat(StringCharacter, minLength, maxLength), Literal("\""));

    public static GrammarNode Integer { get; } = Seq(
        Optional(Literal("-")),
        Alt(Literal("0"), Seq(Bytes(ByteSet.Range('1', '9')), Repeat(Bytes(Digit), 0, 17))));

    public static GrammarNode Number { get; } = Seq(
        Integer,
        Optional(Seq(Literal("."), Repeat(Bytes(Digit), 1, 15))),
        Optional(Seq(Bytes(ByteSet.Of((byte)'e', (byte)'E')), Optional(Bytes(ByteSet.Of((byte)'+', (byte)'-'))), Repeat(Bytes(Digit), 1, 2))));

    public static GrammarNode Boolean { get; } = Alt(Literal("true"), Literal("false"));
    public static GrammarNode Null { get; } = Literal("null");

    /// <summary>Any JSON value (a rule of the grammar, since objects and arrays nest).</summary>
    public GrammarNode Value()
    {
        if (_valueRule is { } existing) return new RuleNode(existing);
        int rule = Grammar.NewRule();
        _valueRule = rule;
        var value = new RuleNode(rule);
        Grammar.Define(rule, Alt(AnyObject(), Seq(Literal("["), Whitespace, Optional(Seq(value, Whitespace, Repeat(Seq(Literal(","), Whitespace, value, Whitespace), 0, -1))), Literal("]")),
            String(), Number, Boolean, Null));
        return value;
    }

    /// <summary>An object with any keys and values.</summary>
    public GrammarNode AnyObject()
    {
        var member = Seq(String(), Whitespace, Literal(":"), Whitespace, Value(), Whitespace);
        return Seq(Literal("{"), Whitespace, Optional(Seq(member, Repeat(Seq(Literal(","), Whitespace, member), 0, -1))), Literal("}"));
    }

    /// <summary>A whole document: leading whitespace, then the value (nothing after it).</summary>
    public GrammarNode Document(GrammarNode value) => Seq(Whitespace, value);

    /// <summary>The grammar of any JSON value.</summary>
    public static Grammar AnyValue(int maxWhitespace = DefaultMaxWhitespace)
    {
        var grammar = new Grammar { Description = "json" };
        var json = new JsonGrammar(grammar, maxWhitespace);
        return grammar.WithRoot(json.Document(json.Value()));
    }
}
