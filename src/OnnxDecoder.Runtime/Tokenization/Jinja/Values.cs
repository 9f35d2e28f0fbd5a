using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

// Template values are plain CLR objects with Python's meaning, as Jinja2 sees them:
//   null = None, bool, long = int, double = float, string = str, List<object?> = list, PyTuple = tuple,
//   PyDict = dict (insertion-ordered), Undefined, Namespace, ICallable (macros, methods, globals).

/// <summary>Jinja2's default Undefined: prints as nothing, iterates as empty, is falsy; any other use is an error.</summary>
internal sealed class Undefined(string hint)
{
    /// <summary>What was missing, as Jinja2 words it: "'x' is undefined", "'dict object' has no attribute 'y'".</summary>
    public string Hint { get; } = hint;

    public JinjaRuntimeError Error() => new(Hint);
}

internal sealed class PyTuple(object?[] items)
{
    public object?[] Items { get; } = items;
}

/// <summary>A dict: keys compare with Python's == (1 == 1.0 == True), iteration keeps insertion order.</summary>
internal sealed class PyDict
{
    public OrderedDictionary<object, object?> Entries { get; } = new(PyKeyComparer.Instance);

    public int Count => Entries.Count;

    public bool TryGet(object? key, out object? value)
    {
        value = null;
        return key is not null ? Entries.TryGetValue(key, out value) : Entries.TryGetValue(NoneKey.Instance, out value);
    }

    public void Set(object? key, object? value) => Entries[key ?? NoneKey.Instance] = value;

    public IEnumerable<object?> Keys => Entries.Keys.Select(k => k is NoneKey ? null : k);

    public IEnumerable<KeyValuePair<object?, object?>> Pairs =>
        Entries.Select(e => new KeyValuePair<object?, object?>(e.Key is NoneKey ? null : e.Key, e.Value));
}

/// <summary>Stands for None as a dict key (dictionaries cannot hold null keys).</summary>
internal sealed class NoneKey
{
    public static readonly NoneKey Instance = new();
}

internal sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();

    public new bool Equals(object? x, object? y) =>
        PyOps.AreEqual(x is NoneKey ? null : x, y is NoneKey ? null : y);

    public int GetHashCode(object obj) => obj switch
    {
        bool b => (b ? 1.0 : 0.0).GetHashCode(),
        long l => ((double)l).GetHashCode(),
        double d => d.GetHashCode(),
        string s => s.GetHashCode(StringComparison.Ordinal),
        _ => 0,
    };
}

/// <summary>The object namespace() makes: attributes that {% set ns.x = ... %} can assign inside loops.</summary>
internal sealed class Namespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>Arguments of a call: positional first, then name=value pairs in the order written.</summary>
internal sealed record CallArgs(List<object?> Positional, List<KeyValuePair<string, object?>> Named)
{
    public static readonly CallArgs Empty = new([], []);

    /// <summary>Python's binding of one parameter: by position, else by name, else the default.</summary>
    public object? Get(int position, string name, object? fallback)
    {
        if (position >= 0 && position < Positional.Count) return Positional[position];
        foreach (var (key, value) in Named)
            if (key == name) return value;
        return fallback;
    }

    public bool Has(int position, string name) =>
        (position >= 0 && position < Positional.Count) || Named.Any(n => n.Key == name);

    /// <summary>Refuses arguments beyond those a function takes, as Python does.</summary>
    public void Check(string function, params string[] parameters)
    {
        if (Positional.Count > parameters.Length)
            throw new JinjaRuntimeError($"{function}() takes at most {parameters.Length} argument(s), {Positional.Count} given");
        foreach (var (key, _) in Named)
            if (Array.IndexOf(parameters, key) < 0)
                throw new JinjaRuntimeError($"{function}() got an unexpected keyword argument '{key}'");
    }
}

internal interface ICallable
{
    string Name { get; }

    object? Call(Interpreter interpreter, CallArgs args);
}

internal sealed class BuiltinFunction(string name, Func<Interpreter, CallArgs, object?> body) : ICallable
{
    public string Name { get; } = name;

    public object? Call(Interpreter interpreter, CallArgs args) => body(interpreter, args);
}

/// <summary>Python's meaning of the operators, truth, equality, order, str() and repr() on template values.</summary>
internal static class PyOps
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        PyTuple => "tuple",
        PyDict => "dict",
        Undefined => "Undefined",
        Namespace => "Namespace",
        LoopContext => "LoopContext",
        ICallable => "function",
        _ => v.GetType().Name,
    };

    public static bool IsTruthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        PyTuple t => t.Items.Length > 0,
        PyDict d => d.Count > 0,
        Undefined => false,
        _ => true,
    };

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static bool IsInteger(object? v) => v is long or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new JinjaRuntimeError($"expected a number, got {TypeName(v)}"),
    };

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw new JinjaRuntimeError($"expected an integer, got {TypeName(v)}"),
    };

    public static bool AreEqual(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b))
            return IsInteger(a) && IsInteger(b) ? ToLong(a) == ToLong(b) : ToDouble(a) == ToDouble(b);
        switch (a)
        {
            case string sa: return b is string sb && sa == sb;
            case List<object?> la: return b is List<object?> lb && SequenceEqual(la, lb);
            case PyTuple ta: return b is PyTuple tb && SequenceEqual(ta.Items, tb.Items);
            case PyDict da:
                if (b is not PyDict db || da.Count != db.Count) return false;
                foreach (var (key, value) in da.Pairs)
                    if (!db.TryGet(key, out var other) || !AreEqual(value, other)) return false;
                return true;
            default: return ReferenceEquals(a, b);
        }
    }

    private static bool SequenceEqual(IReadOnlyList<object?> a, IReadOnlyList<object?> b)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
            if (!AreEqual(a[i], b[i])) return false;
        return true;
    }

    /// <summary>Python's ordering (&lt;, &gt;, sorted): numbers with numbers, str with str, sequences item by item.</summary>
    public static int Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
            return IsInteger(a) && IsInteger(b) ? ToLong(a).CompareTo(ToLong(b)) : ToDouble(a).CompareTo(ToDouble(b));
        if (a is string sa && b is string sb) return CompareCodePoints(sa, sb);
        if (AsSequence(a) is { } xa && AsSequence(b) is { } xb && a?.GetType() == b?.GetType())
        {
            for (int i = 0; i < Math.Min(xa.Count, xb.Count); i++)
            {
                if (AreEqual(xa[i], xb[i])) continue;
                return Compare(xa[i], xb[i]);
            }
            return xa.Count.CompareTo(xb.Count);
        }
        if (a is Undefined u) throw u.Error();
        if (b is Undefined v) throw v.Error();
        throw new JinjaRuntimeError($"'<' is not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static IReadOnlyList<object?>? AsSequence(object? v) => v switch
    {
        List<object?> l => l,
        PyTuple t => t.Items,
        _ => null,
    };

    /// <summary>Python compares strings by code point; UTF-16 ordinal order differs only across surrogates.</summary>
    public static int CompareCodePoints(string a, string b)
    {
        var ea = a.EnumerateRunes();
        var eb = b.EnumerateRunes();
        while (true)
        {
            bool ha = ea.MoveNext(), hb = eb.MoveNext();
            if (!ha || !hb) return ha.CompareTo(hb);
            int c = ea.Current.Value.CompareTo(eb.Current.Value);
            if (c != 0) return c;
        }
    }

    /// <summary>Python's str(): what {{ value }} prints.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

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

    /// <summary>The items a for loop, list() or a filter sees: list items, dict keys, string characters.</summary>
    public static IReadOnlyList<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        PyTuple t => t.Items,
        PyDict d => d.Keys.ToList(),
        string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
        Undefined => [],
        Namespace => throw new JinjaRuntimeError("'Namespace' object is not iterable"),
        _ => throw new JinjaRuntimeError($"'{TypeName(v)}' object is not iterable"),
    };

    public static long Length(object? v) => v switch
    {
        string s => s.EnumerateRunes().Count(),
        List<object?> l => l.Count,
        PyTuple t => t.Items.Length,
        PyDict d => d.Count,
        Undefined => 0,
        _ => throw new JinjaRuntimeError($"object of type '{TypeName(v)}' has no len()"),
    };

    public static bool Contains(object? container, object? item)
    {
        switch (container)
        {
            case string s:
                if (item is not string sub) throw new JinjaRuntimeError($"'in <string>' requires string as left operand, not {TypeName(item)}");
                return s.Contains(sub, StringComparison.Ordinal);
            case PyDict d: return d.TryGet(item, out _);
            case Undefined: return false;
            default: return Iterate(container).Any(x => AreEqual(x, item));
        }
    }
}
