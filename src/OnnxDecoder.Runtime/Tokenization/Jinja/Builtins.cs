using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>Attribute and item lookup, the operators, range() and strftime_now() with Jinja2's and Python's meaning.</summary>
internal static class Builtins
{
    /// <summary>Methods that change a list or dict: transformers' ImmutableSandboxedEnvironment refuses them.</summary>
    private static readonly HashSet<string> MutatingMethods =
        ["append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "update", "setdefault", "popitem", "add", "discard"];

    /// <summary>obj.name: Python attribute (methods, namespace fields, loop fields) first, then obj['name'].</summary>
    public static object? GetAttribute(object? target, string name)
    {
        switch (target)
        {
            case Undefined u: throw u.Error();
            case Namespace ns:
                return ns.Attributes.TryGetValue(name, out var field) ? field : new Undefined($"'Namespace' object has no attribute '{name}'");
            case LoopContext loop:
                return loop.Attribute(name);
            case string s when PyMethods.StringMethods.Contains(name):
                return new BuiltinFunction($"str.{name}", (_, a) => PyMethods.CallStringMethod(s, name, a));
            case List<object?> or PyDict when MutatingMethods.Contains(name):
                return new Undefined($"access to attribute '{name}' of '{PyOps.TypeName(target)}' object is unsafe.");
            case List<object?> list when name is "index" or "count":
                return new BuiltinFunction($"list.{name}", (_, a) => PyMethods.CallListMethod(list, name, a));
            case PyDict dict when PyMethods.DictMethods.Contains(name):
                return new BuiltinFunction($"dict.{name}", (_, a) => PyMethods.CallDictMethod(dict, name, a));
        }
        if (target is PyDict d && d.TryGet(name, out var value)) return value;
        return new Undefined($"'{ObjectName(target)}' has no attribute '{name}'");
    }

    private static string ObjectName(object? v) => v is null ? "None" : $"{PyOps.TypeName(v)} object";

    /// <summary>obj[key]: item first, then (for a string key) the attribute.</summary>
    public static object? GetItem(object? target, object? key)
    {
        switch (target)
        {
            case Undefined u: throw u.Error();
            case PyDict dict:
                if (dict.TryGet(key, out var value)) return value;
                break;
            case List<object?> list when PyOps.IsInteger(key):
                return IndexInto(list, PyOps.ToLong(key), target);
            case PyTuple tuple when PyOps.IsInteger(key):
                return IndexInto(tuple.Items, PyOps.ToLong(key), target);
            case string s when PyOps.IsInteger(key):
            {
                var runes = CodePoints(s);
                var item = IndexInto(runes, PyOps.ToLong(key), target);
                return item is string ? item : item is Undefined ? item : item;
            }
        }
        if (key is string name && target is not PyDict) return GetAttribute(target, name);
        if (key is string keyName && target is PyDict) return GetAttribute(target, keyName);
        return new Undefined($"'{ObjectName(target)}' has no attribute {PyRepr.Repr(key)}");
    }

    private static object? IndexInto(IReadOnlyList<object?> items, long index, object? owner)
    {
        long at = index < 0 ? index + items.Count : index;
        if (at < 0 || at >= items.Count) return new Undefined($"{PyOps.TypeName(owner)} object has no element {index}");
        return items[(int)at];
    }

    /// <summary>A string's code points, each as a one-character (or surrogate pair) string: Python indexes code points.</summary>
    private static List<object?> CodePoints(string s) => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList();

    public static object? Slice(object? target, object? start, object? stop, object? step)
    {
        if (target is Undefined u) throw u.Error();
        IReadOnlyList<object?> items = target switch
        {
            List<object?> l => l,
            PyTuple t => t.Items,
            string s => CodePoints(s),
            _ => throw new JinjaRuntimeError($"'{PyOps.TypeName(target)}' object is not subscriptable"),
        };
        long count = items.Count;
        long stepValue = step is null ? 1 : PyOps.ToLong(step);
        if (stepValue == 0) throw new JinjaRuntimeError("slice step cannot be zero");
        long Clamp(object? bound, long fallback, long low, long high)
        {
            if (bound is null) return fallback;
            long v = PyOps.ToLong(bound);
            if (v < 0) v += count;
            return Math.Clamp(v, low, high);
        }
        var result = new List<object?>();
        if (stepValue > 0)
        {
            long from = Clamp(start, 0, 0, count), to = Clamp(stop, count, 0, count);
            for (long i = from; i < to; i += stepValue) result.Add(items[(int)i]);
        }
        else
        {
            long from = Clamp(start, count - 1, -1, count - 1), to = Clamp(stop, -1, -1, count - 1);
            for (long i = from; i > to; i += stepValue) result.Add(items[(int)i]);
        }
        return target switch
        {
            string => string.Concat(result.Cast<string>()),
            PyTuple => new PyTuple([.. result]),
            _ => result,
        };
    }

    public static object? BinaryOp(string op, object? left, object? right)
    {
        if (op == "~")
        {
            string joined = PyOps.Str(left) + PyOps.Str(right);
            return CheckSize(joined);
        }
        if (left is Undefined ul) throw ul.Error();
        if (right is Undefined ur) throw ur.Error();
        if (PyOps.IsNumber(left) && PyOps.IsNumber(right)) return Arithmetic(op, left, right);
        switch (op)
        {
            case "+" when left is string a && right is string b: return CheckSize(a + b);
            case "+" when left is List<object?> a && right is List<object?> b: return CheckSize(new List<object?>([.. a, .. b]));
            case "+" when left is PyTuple a && right is PyTuple b: return new PyTuple([.. a.Items, .. b.Items]);
            case "*" when PyOps.IsInteger(right) && (left is string || left is List<object?>): return Repeat(left, PyOps.ToLong(right));
            case "*" when PyOps.IsInteger(left) && (right is string || right is List<object?>): return Repeat(right, PyOps.ToLong(left));
            case "%" when left is string format: return PercentFormat(format, right is PyTuple t ? [.. t.Items] : [right]);
        }
        throw new JinjaRuntimeError($"unsupported operand type(s) for {op}: '{PyOps.TypeName(left)}' and '{PyOps.TypeName(right)}'");
    }

    internal static object? CheckSize(object? value)
    {
        long size = value switch { string s => s.Length, List<object?> l => l.Count, _ => 0 };
        if (size > Interpreter.MaxOutputLength)
            throw new JinjaRuntimeError($"a value longer than MaxOutputLength ({Interpreter.MaxOutputLength}) was built");
        return value;
    }

    private static object? Repeat(object? value, long times)
    {
        if (times <= 0) return value is string ? "" : new List<object?>();
        long size = value is string s ? s.Length : ((List<object?>)value!).Count;
        if (size * times > Interpreter.MaxOutputLength)
            throw new JinjaRuntimeError($"repetition would build a value longer than MaxOutputLength ({Interpreter.MaxOutputLength})");
        if (value is string text) return new StringBuilder(text.Length * (int)times).Insert(0, text, (int)times).ToString();
        var list = (List<object?>)value!;
        var result = new List<object?>();
        for (long i = 0; i < times; i++) result.AddRange(list);
        return result;
    }

    private static object? Arithmetic(string op, object? left, object? right)
    {
        if (PyOps.IsInteger(left) && PyOps.IsInteger(right))
        {
            long a = PyOps.ToLong(left), b = PyOps.ToLong(right);
            try
            {
                switch (op)
                {
                    case "+": return checked(a + b);
                    case "-": return checked(a - b);
                    case "*": return checked(a * b);
                    case "/":
                        if (b == 0) throw new JinjaRuntimeError("division by zero");
                        return (double)a / b;
                    case "//":
                        if (b == 0) throw new JinjaRuntimeError("integer division or modulo by zero");
                        return FloorDiv(a, b);
                    case "%":
                        if (b == 0) throw new JinjaRuntimeError("integer division or modulo by zero");
                        return a - checked(FloorDiv(a, b) * b);
                    case "**":
                        if (b < 0) return Math.Pow(a, b);
                        long result = 1;
                        for (long i = 0; i < b; i++)
                        {
                            result = checked(result * a);
                            if (result == 0 || result == 1 && a == 1) break;
                        }
                        return result;
                }
            }
            catch (OverflowException)
            {
                throw new JinjaRuntimeError($"integer result of {a} {op} {b} is beyond 64 bits (this engine's integers are 64-bit)");
            }
        }
        double x = PyOps.ToDouble(left), y = PyOps.ToDouble(right);
        switch (op)
        {
            case "+": return x + y;
            case "-": return x - y;
            case "*": return x * y;
            case "/":
                if (y == 0) throw new JinjaRuntimeError("float division by zero");
                return x / y;
            case "//":
                if (y == 0) throw new JinjaRuntimeError("float floor division by zero");
                return Math.Floor(x / y);
            case "%":
                if (y == 0) throw new JinjaRuntimeError("float modulo");
                double m = x % y;
                return m != 0 && (m < 0) != (y < 0) ? m + y : m;
            case "**": return Math.Pow(x, y);
        }
        throw new JinjaRuntimeError($"unsupported operator {op}");
    }

    private static long FloorDiv(long a, long b)
    {
        long q = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
    }

    public static object? Range(CallArgs args)
    {
        long start = 0, stop, step = 1;
        if (args.Positional.Count == 1) stop = PyOps.ToLong(args.Positional[0]);
        else if (args.Positional.Count is 2 or 3)
        {
            start = PyOps.ToLong(args.Positional[0]);
            stop = PyOps.ToLong(args.Positional[1]);
            if (args.Positional.Count == 3) step = PyOps.ToLong(args.Positional[2]);
        }
        else throw new JinjaRuntimeError("range() takes 1 to 3 integer arguments");
        if (step == 0) throw new JinjaRuntimeError("range() arg 3 must not be zero");
        var items = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (items.Count >= Interpreter.MaxRange)
                throw new JinjaRuntimeError($"range() would make more than MaxRange ({Interpreter.MaxRange}) items");
            items.Add(i);
        }
        return items;
    }

    /// <summary>Python's datetime.strftime for the directives chat templates use (C locale).</summary>
    public static string Strftime(DateTime now, string format)
    {
        var c = CultureInfo.InvariantCulture;
        var builder = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                builder.Append(format[i]);
                continue;
            }
            char d = format[++i];
            builder.Append(d switch
            {
                'Y' => now.Year.ToString("0000", c),
                'y' => (now.Year % 100).ToString("00", c),
                'm' => now.Month.ToString("00", c),
                'd' => now.Day.ToString("00", c),
                'e' => now.Day.ToString(c).PadLeft(2),
                'H' => now.Hour.ToString("00", c),
                'I' => ((now.Hour + 11) % 12 + 1).ToString("00", c),
                'M' => now.Minute.ToString("00", c),
                'S' => now.Second.ToString("00", c),
                'f' => (now.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", c),
                'p' => now.Hour < 12 ? "AM" : "PM",
                'B' => now.ToString("MMMM", c),
                'b' or 'h' => now.ToString("MMM", c),
                'A' => now.ToString("dddd", c),
                'a' => now.ToString("ddd", c),
                'j' => now.DayOfYear.ToString("000", c),
                'w' => ((int)now.DayOfWeek).ToString(c),
                'u' => (now.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)now.DayOfWeek).ToString(c),
                'F' => now.ToString("yyyy-MM-dd", c),
                'T' => now.ToString("HH:mm:ss", c),
                'D' => now.ToString("MM/dd/yy", c),
                '%' => "%",
                _ => throw new JinjaRuntimeError($"strftime_now: the directive %{d} is not supported by this engine"),
            });
        }
        return builder.ToString();
    }

    /// <summary>Python's printf-style formatting ('%s' % x, the format filter) for %s %r %d %i %f %%.</summary>
    public static string PercentFormat(string format, IReadOnlyList<object?> values)
    {
        var builder = new StringBuilder();
        int next = 0;
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%')
            {
                builder.Append(format[i]);
                continue;
            }
            if (++i >= format.Length) throw new JinjaRuntimeError("incomplete format");
            int precision = -1;
            if (format[i] == '.')
            {
                int start = ++i;
                while (i < format.Length && char.IsAsciiDigit(format[i])) i++;
                precision = int.Parse(format.AsSpan(start, i - start), CultureInfo.InvariantCulture);
                if (i >= format.Length) throw new JinjaRuntimeError("incomplete format");
            }
            char d = format[i];
            if (d == '%')
            {
                builder.Append('%');
                continue;
            }
            if (next >= values.Count) throw new JinjaRuntimeError("not enough arguments for format string");
            var v = values[next++];
            builder.Append(d switch
            {
                's' => PyOps.Str(v),
                'r' => PyRepr.Repr(v),
                'd' or 'i' => PyOps.IsNumber(v) ? ((long)Math.Truncate(PyOps.ToDouble(v))).ToString(CultureInfo.InvariantCulture)
                    : throw new JinjaRuntimeError($"%{d} format: a real number is required, not {PyOps.TypeName(v)}"),
                'f' => PyOps.ToDouble(v).ToString("F" + (precision < 0 ? 6 : precision), CultureInfo.InvariantCulture),
                _ => throw new JinjaRuntimeError($"format directive %{d} is not supported by this engine"),
            });
        }
        if (next < values.Count) throw new JinjaRuntimeError("not all arguments converted during string formatting");
        return builder.ToString();
    }
}
