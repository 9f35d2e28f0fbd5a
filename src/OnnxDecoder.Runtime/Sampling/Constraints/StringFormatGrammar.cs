using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// The contents of JSON strings of a JSON Schema <c>format</c>, as stated grammars. Each writes a
/// strict, common subset of what the format's standard allows, so every output passes a validator
/// that asserts the format (all ASCII, nothing that needs a JSON escape):
/// <list type="bullet">
/// <item>date: RFC 3339 full-date YYYY-MM-DD, years 0001-9999, days that exist in their month (29 February in leap years only).</item>
/// <item>time: RFC 3339 full-time HH:MM:SS, optional fraction of 1-6 digits, then Z or an offset ±HH:MM up to ±13:59
/// (no leap second; .NET's date types refuse offsets past 14 hours).</item>
/// <item>date-time: date "T" time.</item>
/// <item>email: local@domain with a dot-atom local part of atoms of [A-Za-z0-9_+-] (alphanumeric at both ends) and a domain of 1-3 alphanumeric labels
/// (hyphens inside) and a letter-only top-level label; parts kept short (local atoms 1-32, labels 1-32 characters).</item>
/// <item>uuid: 8-4-4-4-12 hexadecimal digits (either case).</item>
/// <item>ipv4: dotted quad of 0-255 without leading zeros.</item>
/// <item>uri: http or https, "://", a host of DNS labels, an optional port, then path segments of unreserved characters.</item>
/// </list>
/// </summary>
public static class StringFormatGrammar
{
    public static readonly IReadOnlyList<string> Supported = ["date", "time", "date-time", "email", "uuid", "ipv4", "uri"];

    private static readonly ByteSet Digit = ByteSet.Range('0', '9');
    private static readonly ByteSet Hex = Digit.Union(ByteSet.Range('a', 'f')).Union(ByteSet.Range('A', 'F'));
    private static readonly ByteSet Letter = ByteSet.Range('a', 'z').Union(ByteSet.Range('A', 'Z'));
    private static readonly ByteSet Alphanumeric = Letter.Union(Digit);

    /// <summary>The grammar of a format's string contents (no quotes), or null when the format is not one of <see cref="Supported"/>.</summary>
    public static GrammarNode? For(string format) => format switch
    {
        "date" => Date,
        "time" => Time,
        "date-time" => Seq(Date, Literal("T"), Time),
        "email" => Email,
        "uuid" => Uuid,
        "ipv4" => Ipv4,
        "uri" => Uri,
        _ => null,
    };

    private static GrammarNode D(ByteSet set) => Bytes(set);
    private static GrammarNode D(char low, char high) => Bytes(ByteSet.Range(low, high));
    private static GrammarNode Digits(int count) => Repeat(Bytes(Digit), count, count);

    // Two-digit numbers 00..max written with leading zero (hours, minutes, seconds).
    private static GrammarNode UpTo(int max) => Alt([.. Enumerable.Range(0, max / 10 + 1).Select(tens =>
        Seq(Literal(((char)('0' + tens)).ToString()), D('0', (char)('0' + Math.Min(9, max - tens * 10)))))]);

    private static GrammarNode Date { get; } = BuildDate();

    private static GrammarNode BuildDate()
    {
        // Years 0001-9999 (0000 is not a year datetime libraries accept).
        var year = Alt(Seq(Literal("000"), D('1', '9')), Seq(Literal("00"), D('1', '9'), D(Digit)), Seq(Literal("0"), D('1', '9'), Digits(2)),
            Seq(D('1', '9'), Digits(3)));
        // Leap years: the last two digits a multiple of 4 other than 00, or 00 after a multiple of 4 (a century divisible by 400).
        var multipleOf4 = Alt([.. Enumerable.Range(1, 24).Select(i => Literal((i * 4).ToString("00")))]);
        var leapYear = Alt(Seq(D(Digit), D(Digit), multipleOf4), Seq(multipleOf4, Literal("00")));
        var day28 = Alt(Seq(Literal("0"), D('1', '9')), Seq(Literal("1"), D(Digit)), Seq(Literal("2"), D('0', '8')));
        var day30 = Alt(day28, Literal("29"), Literal("30"));
        var day31 = Alt(day30, Literal("31"));
        var longMonth = Alt(Literal("01"), Literal("03"), Literal("05"), Literal("07"), Literal("08"), Literal("10"), Literal("12"));
        var shortMonth = Alt(Literal("04"), Literal("06"), Literal("09"), Literal("11"));
        var monthDay = Alt(Seq(longMonth, Literal("-"), day31), Seq(shortMonth, Literal("-"), day30), Seq(Literal("02-"), day28));
        return Alt(Seq(year, Literal("-"), monthDay), Seq(leapYear, Literal("-02-29")));
    }

    private static GrammarNode Time { get; } = Seq(
        UpTo(23), Literal(":"), UpTo(59), Literal(":"), UpTo(59),
        Optional(Seq(Literal("."), Repeat(Bytes(Digit), 1, 6))),
        Alt(Literal("Z"), Seq(D(ByteSet.Of((byte)'+', (byte)'-')), UpTo(13), Literal(":"), UpTo(59))));

    // A DNS label: alphanumerics, hyphens only inside.
    private static GrammarNode Label { get; } = Seq(D(Alphanumeric), Optional(Seq(Repeat(D(Alphanumeric.Union(ByteSet.Of((byte)'-'))), 0, 30), D(Alphanumeric))));

    private static GrammarNode Email { get; } = BuildEmail();

    private static GrammarNode BuildEmail()
    {
        var atom = Seq(D(Alphanumeric), Optional(Seq(Repeat(D(Alphanumeric.Union(ByteSet.Of((byte)'_', (byte)'+', (byte)'-'))), 0, 30), D(Alphanumeric))));
        var local = Seq(atom, Repeat(Seq(Literal("."), atom), 0, 2));
        var domain = Seq(Repeat(Seq(Label, Literal(".")), 1, 3), Repeat(D(Letter), 2, 12));
        return Seq(local, Literal("@"), domain);
    }

    private static GrammarNode Uuid { get; } = Seq(
        Repeat(D(Hex), 8, 8), Literal("-"), Repeat(D(Hex), 4, 4), Literal("-"), Repeat(D(Hex), 4, 4), Literal("-"),
        Repeat(D(Hex), 4, 4), Literal("-"), Repeat(D(Hex), 12, 12));

    private static GrammarNode Octet { get; } = Alt(
        Seq(Literal("25"), D('0', '5')), Seq(Literal("2"), D('0', '4'), D(Digit)), Seq(Literal("1"), D(Digit), D(Digit)),
        Seq(D('1', '9'), D(Digit)), D(Digit));

    private static GrammarNode Ipv4 { get; } = Seq(Octet, Literal("."), Octet, Literal("."), Octet, Literal("."), Octet);

    private static GrammarNode Uri { get; } = Seq(
        Literal("http"), Optional(Literal("s")), Literal("://"),
        Label, Repeat(Seq(Literal("."), Label), 0, 3),
        Optional(Seq(Literal(":"), D('1', '9'), Repeat(D(Digit), 0, 3))),
        Repeat(Seq(Literal("/"), Repeat(D(Alphanumeric.Union(ByteSet.Of((byte)'-', (byte)'.', (byte)'_', (byte)'~'))), 0, 24)), 0, 4));
}
