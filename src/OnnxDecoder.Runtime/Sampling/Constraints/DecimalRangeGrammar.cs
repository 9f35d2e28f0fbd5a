using System.Text;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// A JSON number written out as decimal digits: <see cref="Integer"/> without leading zeros ("0"
/// for zero), <see cref="Fraction"/> without trailing zeros. Bounds are kept as digits, not as a
/// double or decimal, so 0.1 or 1e30 compare exactly.
/// </summary>
public readonly record struct DecimalDigits(bool Negative, string Integer, string Fraction)
{
    /// <summary>Exponents beyond this are refused (a bound of 10^400 says nothing an 18-digit number can use).</summary>
    private const int MaxExponent = 400;

    public bool IsZero => Integer == "0" && Fraction.Length == 0;

    public DecimalDigits Negate() => IsZero ? this : this with { Negative = !Negative };

    /// <summary>Parses a JSON number's text (RFC 8259 syntax, exponent included); null when it is not one or its exponent is out of range.</summary>
    public static DecimalDigits? Parse(string text)
    {
        int at = 0;
        bool negative = at < text.Length && text[at] == '-';
        if (negative) at++;
        int intStart = at;
        while (at < text.Length && char.IsAsciiDigit(text[at])) at++;
        string intPart = text[intStart..at];
        if (intPart.Length == 0 || (intPart.Length > 1 && intPart[0] == '0')) return null;
        string fracPart = "";
        if (at < text.Length && text[at] == '.')
        {
            int fracStart = ++at;
            while (at < text.Length && char.IsAsciiDigit(text[at])) at++;
            fracPart = text[fracStart..at];
            if (fracPart.Length == 0) return null;
        }
        int exponent = 0;
        if (at < text.Length && text[at] is 'e' or 'E')
        {
            at++;
            bool negativeExponent = at < text.Length && text[at] == '-';
            if (at < text.Length && text[at] is '+' or '-') at++;
            int expStart = at;
            while (at < text.Length && char.IsAsciiDigit(text[at])) at++;
            if (at == expStart || at - expStart > 4) return null;
            exponent = int.Parse(text.AsSpan(expStart, at - expStart), System.Globalization.CultureInfo.InvariantCulture);
            if (negativeExponent) exponent = -exponent;
        }
        if (at != text.Length || Math.Abs(exponent) > MaxExponent) return null;
        // All digits with the decimal point moved by the exponent.
        string digits = intPart + fracPart;
        int point = intPart.Length + exponent;
        if (point < 0)
        {
            digits = new string('0', -point) + digits;
            point = 0;
        }
        if (point > digits.Length) digits += new string('0', point - digits.Length);
        string integer = digits[..point].TrimStart('0'), fraction = digits[point..].TrimEnd('0');
        var value = new DecimalDigits(negative, integer.Length == 0 ? "0" : integer, fraction);
        return value.IsZero ? value with { Negative = false } : value;
    }

    public override string ToString() => (Negative ? "-" : "") + Integer + (Fraction.Length > 0 ? "." + Fraction : "");

    /// <summary>Numeric order.</summary>
    public static int Compare(DecimalDigits a, DecimalDigits b)
    {
        if (a.Negative != b.Negative) return a.Negative ? -1 : 1;
        int magnitude = a.Integer.Length != b.Integer.Length ? a.Integer.Length.CompareTo(b.Integer.Length)
            : string.CompareOrdinal(a.Integer, b.Integer) is var byInteger and not 0 ? byInteger
            : string.CompareOrdinal(a.Fraction, b.Fraction); // no trailing zeros: a prefix is the smaller
        return a.Negative ? -Math.Sign(magnitude) : Math.Sign(magnitude);
    }
}

/// <summary>A bound of a range: the value, and whether the value itself is left out.</summary>
public readonly record struct DecimalBound(DecimalDigits Value, bool Exclusive);

/// <summary>
/// The JSON numbers between two bounds as a digit automaton, exactly: every number it writes lies in
/// the range, and every number in the range that fits the written form is writable. The form:
/// an optional '-', an integer part of 1..<paramref name="maxIntegerDigits"/> digits without leading
/// zeros, and (when <paramref name="maxFractionDigits"/> > 0) an optional fraction of 1..that many
/// digits; no exponent and no "-0". Built by walking the digit positions beside both bounds: a digit
/// equal to a bound's digit stays tight against it, any other digit between them frees the rest.
/// </summary>
public static class DecimalRangeGrammar
{
    private static readonly ByteSet Digit = ByteSet.Range('0', '9');

    /// <summary>The numbers in [lower, upper] (either side open when null); null when no number of the form lies there.</summary>
    public static GrammarNode? Between(DecimalBound? lower, DecimalBound? upper, int maxIntegerDigits, int maxFractionDigits)
    {
        var choices = new List<GrammarNode>();
        // Negative numbers: "-" then a magnitude m > 0 with -m in range, that is m in [-upper, -lower].
        if (lower is null || lower.Value.Value.Negative)
        {
            var magnitudeLow = upper is { } u && u.Value.Negative ? new DecimalBound(u.Value.Negate(), u.Exclusive) : new DecimalBound(Zero, Exclusive: true);
            DecimalBound? magnitudeHigh = lower is { } l ? new DecimalBound(l.Value.Negate(), l.Exclusive) : null;
            if (Magnitudes(magnitudeLow, magnitudeHigh, maxIntegerDigits, maxFractionDigits) is { } negative) choices.Add(Seq(Literal("-"), negative));
        }
        // Zero and positive numbers.
        if (upper is null || !upper.Value.Value.Negative)
        {
            var magnitudeLow = lower is { } l && !l.Value.Negative ? l : new DecimalBound(Zero, Exclusive: false);
            if (Magnitudes(magnitudeLow, upper, maxIntegerDigits, maxFractionDigits) is { } positive) choices.Add(positive);
        }
        return choices.Count == 0 ? null : Alt([.. choices]);
    }

    private static readonly DecimalDigits Zero = new(false, "0", "");

    // Non-negative numbers m with low <= m <= high (each side exclusive as marked; high null: unbounded).
    private static GrammarNode? Magnitudes(DecimalBound low, DecimalBound? high, int maxIntegerDigits, int maxFractionDigits)
    {
        var byLength = new List<GrammarNode>();
        for (int length = 1; length <= maxIntegerDigits; length++)
        {
            // A shorter bound than this length: every number of this length is past it; a longer one: none reaches it.
            if (low.Value.Integer.Length > length) continue;
            if (high is { } h && (h.Value.Integer.Length < length)) break;
            bool tightLow = low.Value.Integer.Length == length;
            bool tightHigh = high is { } hb && hb.Value.Integer.Length == length;
            var walk = new Walk(length, maxFractionDigits, low, high);
            if (walk.From(0, tightLow, tightHigh) is { } node) byLength.Add(node);
        }
        return byLength.Count == 0 ? null : Alt([.. byLength]);
    }

    private sealed class Walk(int integerDigits, int maxFractionDigits, DecimalBound low, DecimalBound? high)
    {
        private readonly string _low = low.Value.Integer + low.Value.Fraction;
        private readonly string _high = high is { } h ? h.Value.Integer + h.Value.Fraction : "";
        private readonly Dictionary<(int, bool, bool), GrammarNode?> _memo = new();

        // Bound digits past their end are zeros (the fraction continues with zeros forever).
        private static int DigitAt(string digits, int position) => position < digits.Length ? digits[position] - '0' : 0;
        private static bool ZerosFrom(string digits, int position)
        {
            for (int i = position; i < digits.Length; i++) if (digits[i] != '0') return false;
            return true;
        }

        // Whether the number may end at `position` digits written: its remaining digits are then zeros.
        private bool MayEnd(int position, bool tightLow, bool tightHigh)
        {
            // Against the lower bound: zeros reach it only if its remaining digits are zeros too (then equal).
            if (tightLow && (!ZerosFrom(_low, position) || low.Exclusive)) return false;
            // Against the upper bound: zeros are below it unless its remaining digits are zeros (then equal).
            if (tightHigh && ZerosFrom(_high, position) && high!.Value.Exclusive) return false;
            return true;
        }

        /// <summary>The rest of the number after <paramref name="position"/> digits (integer digits first, then fraction digits).</summary>
        public GrammarNode? From(int position, bool tightLow, bool tightHigh)
        {
            if (_memo.TryGetValue((position, tightLow, tightHigh), out var known)) return known;
            var choices = new List<GrammarNode>();
            int lastPosition = integerDigits + maxFractionDigits;
            if (position >= integerDigits && MayEnd(position, tightLow, tightHigh)) choices.Add(Empty);
            if (position < lastPosition)
            {
                int lowest = tightLow ? DigitAt(_low, position) : 0;
                int highest = tightHigh ? DigitAt(_high, position) : 9;
                if (position == 0 && integerDigits > 1) lowest = Math.Max(lowest, 1);
                var digits = new List<GrammarNode>();
                int lowDigit = DigitAt(_low, position), highDigit = tightHigh ? DigitAt(_high, position) : 9;
                void Add(int from, int to, bool staysLow, bool staysHigh)
                {
                    from = Math.Max(from, lowest);
                    to = Math.Min(to, highest);
                    if (from <= to && From(position + 1, staysLow, staysHigh) is { } rest) digits.Add(Seq(Bytes(ByteSet.Range('0' + from, '0' + to)), rest));
                }
                // The lower bound's digit stays tight on it, the upper bound's on that one, those between free the rest.
                if (tightLow && tightHigh && lowDigit == highDigit) Add(lowDigit, lowDigit, true, true);
                else
                {
                    if (tightLow) Add(lowDigit, lowDigit, true, false);
                    if (tightHigh) Add(highDigit, highDigit, false, true);
                    Add(tightLow ? lowDigit + 1 : lowest, tightHigh ? highDigit - 1 : highest, false, false);
                }
                if (digits.Count > 0)
                {
                    var next = Alt([.. digits]);
                    choices.Add(position == integerDigits ? Seq(Literal("."), next) : next);
                }
            }
            var node = choices.Count == 0 ? null : Alt([.. choices]);
            _memo[(position, tightLow, tightHigh)] = node;
            return node;
        }
    }

    /// <summary>The bounds as text for messages, e.g. "[0, 100)".</summary>
    public static string Describe(DecimalBound? lower, DecimalBound? upper)
    {
        var text = new StringBuilder();
        text.Append(lower is { } l ? (l.Exclusive ? "(" : "[") + l.Value : "(-inf");
        text.Append(", ");
        text.Append(upper is { } u ? u.Value + (u.Exclusive ? ")" : "]") : "inf)");
        return text.ToString();
    }
}
