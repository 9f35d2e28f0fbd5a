using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>Python's repr() of template values, as str() prints containers and numbers (float repr: shortest round-trip).</summary>
internal static class PyRepr
{
    public static string Repr(object? v)
    {
        var builder = new StringBuilder();
        AppendRepr(builder, v, 0);
        return builder.ToString();
    }

    private static void AppendRepr(StringBuilder builder, object? v, int depth)
    {
        if (depth > Interpreter.MaxRecursionDepth)
            throw new JinjaRuntimeError($"value nests deeper than MaxRecursionDepth ({Interpreter.MaxRecursionDepth})");
        switch (v)
        {
            case null: builder.Append("None"); break;
            case bool b: builder.Append(b ? "True" : "False"); break;
            case long l: builder.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: builder.Append(FloatRepr(d)); break;
            case string s: AppendStringRepr(builder, s); break;
            case List<object?> list:
                builder.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) builder.Append(", ");
                    AppendRepr(builder, list[i], depth + 1);
                }
                builder.Append(']');
                break;
            case PyTuple tuple:
                builder.Append('(');
                for (int i = 0; i < tuple.Items.Length; i++)
                {
                    if (i > 0) builder.Append(", ");
                    AppendRepr(builder, tuple.Items[i], depth + 1);
                }
                builder.Append(tuple.Items.Length == 1 ? ",)" : ")");
                break;
            case PyDict dict:
                builder.Append('{');
                bool first = true;
                foreach (var (key, value) in dict.Pairs)
                {
                    if (!first) builder.Append(", ");
                    first = false;
                    AppendRepr(builder, key, depth + 1);
                    builder.Append(": ");
                    AppendRepr(builder, value, depth + 1);
                }
                builder.Append('}');
                break;
            case Undefined: builder.Append("Undefined"); break;
            case Namespace ns:
                builder.Append("<Namespace {");
                bool firstAttribute = true;
                foreach (var (name, value) in ns.Attributes)
                {
                    if (!firstAttribute) builder.Append(", ");
                    firstAttribute = false;
                    AppendStringRepr(builder, name);
                    builder.Append(": ");
                    AppendRepr(builder, value, depth + 1);
                }
                builder.Append("}>");
                break;
            case ICallable c: builder.Append($"<function {c.Name}>"); break;
            default: builder.Append(v.ToString()); break;
        }
    }

    /// <summary>Python's repr of a str: single quotes unless the text holds ' and no ", non-printables escaped.</summary>
    public static void AppendStringRepr(StringBuilder builder, string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        builder.Append(quote);
        foreach (var rune in s.EnumerateRunes())
        {
            int c = rune.Value;
            if (c == quote || c == '\\') builder.Append('\\').Append((char)c);
            else if (c == '\n') builder.Append("\\n");
            else if (c == '\r') builder.Append("\\r");
            else if (c == '\t') builder.Append("\\t");
            else if (IsPrintable(rune)) builder.Append(rune.ToString());
            else if (c < 0x100) builder.Append($"\\x{c:x2}");
            else if (c < 0x10000) builder.Append($"\\u{c:x4}");
            else builder.Append($"\\U{c:x8}");
        }
        builder.Append(quote);
    }

    private static bool IsPrintable(Rune rune)
    {
        if (rune.Value == ' ') return true;
        return Rune.GetUnicodeCategory(rune) switch
        {
            UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator
                or UnicodeCategory.SpaceSeparator or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
                or UnicodeCategory.OtherNotAssigned => false,
            _ => true,
        };
    }

    /// <summary>Python's repr of a float: the shortest round-trip digits, fixed notation for 1e-4 &lt;= |x| &lt; 1e16.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsPositiveInfinity(d)) return "inf";
        if (double.IsNegativeInfinity(d)) return "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        string r = d.ToString("E16", CultureInfo.InvariantCulture);
        // Shortest digits: "R" gives them, in either notation; normalise to digits + exponent.
        string shortest = d.ToString("R", CultureInfo.InvariantCulture);
        bool negative = shortest.StartsWith('-');
        if (negative) shortest = shortest[1..];
        int exponentAt = shortest.IndexOfAny(['E', 'e']);
        string mantissa = exponentAt >= 0 ? shortest[..exponentAt] : shortest;
        int exponent = exponentAt >= 0 ? int.Parse(shortest[(exponentAt + 1)..], CultureInfo.InvariantCulture) : 0;
        int dot = mantissa.IndexOf('.');
        string digits = dot >= 0 ? mantissa.Remove(dot, 1) : mantissa;
        int pointPosition = (dot >= 0 ? dot : mantissa.Length) + exponent;
        int leadingZeros = digits.Length - digits.TrimStart('0').Length;
        digits = digits.TrimStart('0');
        pointPosition -= leadingZeros;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) return r; // unreachable for non-zero d
        int decimalExponent = pointPosition - 1; // d = 0.digits * 10^pointPosition = d.igits * 10^(pointPosition-1)
        var builder = new StringBuilder();
        if (negative) builder.Append('-');
        if (decimalExponent < -4 || decimalExponent >= 16)
        {
            builder.Append(digits[0]);
            if (digits.Length > 1) builder.Append('.').Append(digits, 1, digits.Length - 1);
            builder.Append('e').Append(decimalExponent < 0 ? '-' : '+').Append(Math.Abs(decimalExponent).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPosition <= 0)
        {
            builder.Append("0.").Append('0', -pointPosition).Append(digits);
        }
        else if (pointPosition >= digits.Length)
        {
            builder.Append(digits).Append('0', pointPosition - digits.Length).Append(".0");
        }
        else
        {
            builder.Append(digits, 0, pointPosition).Append('.').Append(digits, pointPosition, digits.Length - pointPosition);
        }
        return builder.ToString();
    }
}
