using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>Jinja2's built-in filters and tests (the ones chat templates use), and transformers' tojson.</summary>
internal static partial class Builtins
{
    private delegate object? Filter(Interpreter interpreter, object? value, CallArgs args);

    private static readonly Dictionary<string, Filter> Filters = new(StringComparer.Ordinal)
    {
        ["trim"] = (_, v, a) => PyStrip(AsString(v, "trim"), a.Get(0, "chars", null) as string, true, true),
        ["tojson"] = (_, v, a) => ToJson(v, a),
        ["items"] = (_, v, _) => v is Undefined ? new List<object?>() : v is PyDict d
            ? d.Pairs.Select(p => (object?)new PyTuple([p.Key, p.Value])).ToList()
            : throw new JinjaRuntimeError($"can only get item pairs from a mapping, not {PyOps.TypeName(v)}"),
        ["length"] = (_, v, _) => PyOps.Length(v),
        ["count"] = (_, v, _) => PyOps.Length(v),
        ["join"] = (i, v, a) => Join(i, v, a),
        ["replace"] = (_, v, a) => ReplaceCount(PyOps.Str(v), PyOps.Str(a.Get(0, "old", "")), PyOps.Str(a.Get(1, "new", "")),
            a.Get(2, "count", null) is { } count ? PyOps.ToLong(count) : -1),
        ["default"] = Default,
        ["d"] = Default,
        ["first"] = (_, v, _) => PyOps.Iterate(v) is { Count: > 0 } items ? items[0] : new Undefined("No first item, sequence was empty."),
        ["last"] = (_, v, _) => PyOps.Iterate(v) is { Count: > 0 } items ? items[^1] : new Undefined("No last item, sequence was empty."),
        ["map"] = Map,
        ["select"] = (i, v, a) => Select(i, v, a, keep: true, byAttribute: false),
        ["reject"] = (i, v, a) => Select(i, v, a, keep: false, byAttribute: false),
        ["selectattr"] = (i, v, a) => Select(i, v, a, keep: true, byAttribute: true),
        ["rejectattr"] = (i, v, a) => Select(i, v, a, keep: false, byAttribute: true),
        ["dictsort"] = DictSort,
        ["indent"] = (_, v, a) => Indent(PyOps.Str(v), a),
        ["string"] = (_, v, _) => PyOps.Str(v),
        ["int"] = (_, v, a) => ToInt(v, a),
        ["float"] = (_, v, a) => ToFloat(v, a),
        ["list"] = (_, v, _) => PyOps.Iterate(v).ToList(),
        ["unique"] = Unique,
        ["upper"] = (_, v, _) => PyOps.Str(v).ToUpperInvariant(),
        ["lower"] = (_, v, _) => PyOps.Str(v).ToLowerInvariant(),
        ["capitalize"] = (_, v, _) => PyCapitalize(PyOps.Str(v)),
        ["title"] = (_, v, _) => JinjaTitle(PyOps.Str(v)),
        ["safe"] = (_, v, _) => PyOps.Str(v),
        ["escape"] = (_, v, _) => Escape(PyOps.Str(v)),
        ["e"] = (_, v, _) => Escape(PyOps.Str(v)),
        ["abs"] = (_, v, _) => v switch
        {
            long l => (object)Math.Abs(l),
            double d => Math.Abs(d),
            bool b => b ? 1L : 0L,
            _ => throw new JinjaRuntimeError($"bad operand type for abs(): '{PyOps.TypeName(v)}'"),
        },
        ["round"] = Round,
        ["sum"] = Sum,
        ["min"] = (_, v, a) => MinMax(v, a, sign: -1),
        ["max"] = (_, v, a) => MinMax(v, a, sign: 1),
        ["reverse"] = (_, v, _) => v is string s
            ? string.Concat(s.EnumerateRunes().Reverse().Select(r => r.ToString()))
            : PyOps.Iterate(v).Reverse().ToList(),
        ["sort"] = Sort,
        ["batch"] = Batch,
        ["wordcount"] = (_, v, _) => (long)Regex.Matches(PyOps.Str(v), @"\w+").Count,
        ["center"] = (_, v, a) => CallStringMethod(PyOps.Str(v), "center", new CallArgs([a.Get(0, "width", 80L)], [])),
        ["format"] = (_, v, a) => PercentFormat(PyOps.Str(v), a.Positional),
        ["attr"] = (_, v, a) => GetAttribute(v, PyOps.Str(a.Get(0, "name", ""))),
        ["pprint"] = (_, v, _) => PyOps.Repr(v),
    };

    /// <summary>Whether a filter exists: Jinja2 refuses an unknown filter when the template is compiled.</summary>
    public static bool HasFilter(string name) => Filters.ContainsKey(name);

    public static bool HasTest(string name) => Tests.ContainsKey(name);

    public static object? RunFilter(Interpreter interpreter, string name, object? value, CallArgs args)
    {
        if (!Filters.TryGetValue(name, out var filter))
            throw new JinjaRuntimeError($"no filter named '{name}' (this chat-template engine does not have it)");
        return filter(interpreter, value, args);
    }

    private static string AsString(object? v, string filter) => v is Undefined u && filter == "trim" ? PyOps.Str(u) : PyOps.Str(v);

    private static object? Default(Interpreter _, object? v, CallArgs a)
    {
        var fallback = a.Get(0, "default_value", "");
        bool boolean = PyOps.IsTruthy(a.Get(1, "boolean", false));
        if (v is Undefined || (boolean && !PyOps.IsTruthy(v))) return fallback;
        return v;
    }

    private static object? Join(Interpreter _, object? v, CallArgs a)
    {
        string separator = PyOps.Str(a.Get(0, "d", ""));
        var attribute = a.Get(1, "attribute", null);
        var items = PyOps.Iterate(v).Select(i => attribute is null ? i : AttributePath(i, attribute));
        var builder = new StringBuilder();
        bool first = true;
        foreach (var item in items)
        {
            if (!first) builder.Append(separator);
            first = false;
            builder.Append(PyOps.Str(item));
            if (builder.Length > Interpreter.MaxOutputLength)
                throw new JinjaRuntimeError($"join built a value longer than MaxOutputLength ({Interpreter.MaxOutputLength})");
        }
        return builder.ToString();
    }

    /// <summary>Jinja2's attribute= argument: "a.b" or "0" walks items by name or index.</summary>
    private static object? AttributePath(object? item, object? attribute)
    {
        if (attribute is long index) return GetItem(item, index);
        foreach (var part in PyOps.Str(attribute).Split('.'))
            item = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? GetItem(item, n) : GetItem(item, part);
        return item;
    }

    private static object? Map(Interpreter interpreter, object? v, CallArgs a)
    {
        var items = PyOps.Iterate(v);
        if (a.Positional.Count == 0 && a.Named.Any(n => n.Key == "attribute"))
        {
            var attribute = a.Get(-1, "attribute", null);
            var fallback = a.Get(-1, "default", null);
            bool hasDefault = a.Has(-1, "default");
            return items.Select(i =>
            {
                var value = AttributePath(i, attribute);
                return value is Undefined && hasDefault ? fallback : value;
            }).ToList();
        }
        if (a.Positional.Count == 0) throw new JinjaRuntimeError("map() needs a filter name or attribute=");
        string filter = PyOps.Str(a.Positional[0]);
        var rest = new CallArgs(a.Positional.Skip(1).ToList(), a.Named);
        return items.Select(i => RunFilter(interpreter, filter, i, rest)).ToList();
    }

    private static object? Select(Interpreter interpreter, object? v, CallArgs a, bool keep, bool byAttribute)
    {
        var items = PyOps.Iterate(v);
        int next = 0;
        object? attribute = null;
        if (byAttribute)
        {
            if (a.Positional.Count == 0) throw new JinjaRuntimeError("selectattr/rejectattr need an attribute name");
            attribute = a.Positional[next++];
        }
        string? test = a.Positional.Count > next ? PyOps.Str(a.Positional[next++]) : null;
        var testArgs = new CallArgs(a.Positional.Skip(next).ToList(), a.Named);
        var result = new List<object?>();
        foreach (var item in items)
        {
            var probe = byAttribute ? AttributePath(item, attribute) : item;
            bool passes = test is null ? PyOps.IsTruthy(probe) : RunTest(interpreter, test, probe, testArgs);
            if (passes == keep) result.Add(item);
        }
        return result;
    }

    private static int SortCompare(object? x, object? y, bool caseSensitive)
    {
        if (!caseSensitive && x is string a && y is string b) return PyOps.CompareCodePoints(a.ToLowerInvariant(), b.ToLowerInvariant());
        return PyOps.Compare(x, y);
    }

    private static object? DictSort(Interpreter _, object? v, CallArgs a)
    {
        if (v is not PyDict dict) throw new JinjaRuntimeError($"dictsort needs a mapping, not {PyOps.TypeName(v)}");
        bool caseSensitive = PyOps.IsTruthy(a.Get(0, "case_sensitive", false));
        string by = PyOps.Str(a.Get(1, "by", "key"));
        bool reverse = PyOps.IsTruthy(a.Get(2, "reverse", false));
        int position = by switch { "key" => 0, "value" => 1, _ => throw new JinjaRuntimeError("You can only sort by either \"key\" or \"value\"") };
        var pairs = dict.Pairs.Select(p => new object?[] { p.Key, p.Value }).ToList();
        var sorted = StableSort(pairs, (x, y) => SortCompare(x[position], y[position], caseSensitive), reverse);
        return sorted.Select(p => (object?)new PyTuple(p)).ToList();
    }

    /// <summary>Python's sorted(): stable, and reverse=True keeps equal items in their original order.</summary>
    private static List<T> StableSort<T>(List<T> items, Comparison<T> compare, bool reverse)
    {
        var indexed = items.Select((item, i) => (item, i)).ToList();
        indexed.Sort((x, y) =>
        {
            int c = compare(x.item, y.item);
            if (reverse) c = -c;
            return c != 0 ? c : x.i.CompareTo(y.i);
        });
        return indexed.Select(p => p.item).ToList();
    }

    private static object? Sort(Interpreter _, object? v, CallArgs a)
    {
        bool reverse = PyOps.IsTruthy(a.Get(0, "reverse", false));
        bool caseSensitive = PyOps.IsTruthy(a.Get(1, "case_sensitive", false));
        var attribute = a.Get(2, "attribute", null);
        var items = PyOps.Iterate(v).ToList();
        return StableSort(items, (x, y) => SortCompare(attribute is null ? x : AttributePath(x, attribute),
            attribute is null ? y : AttributePath(y, attribute), caseSensitive), reverse);
    }

    private static object? Unique(Interpreter _, object? v, CallArgs a)
    {
        bool caseSensitive = PyOps.IsTruthy(a.Get(0, "case_sensitive", false));
        var attribute = a.Get(1, "attribute", null);
        var seen = new List<object?>();
        var result = new List<object?>();
        foreach (var item in PyOps.Iterate(v))
        {
            var key = attribute is null ? item : AttributePath(item, attribute);
            if (!caseSensitive && key is string s) key = s.ToLowerInvariant();
            if (seen.Any(k => PyOps.AreEqual(k, key))) continue;
            seen.Add(key);
            result.Add(item);
        }
        return result;
    }

    private static object? MinMax(object? v, CallArgs a, int sign)
    {
        bool caseSensitive = PyOps.IsTruthy(a.Get(0, "case_sensitive", false));
        var attribute = a.Get(1, "attribute", null);
        var items = PyOps.Iterate(v);
        if (items.Count == 0) return new Undefined($"No aggregated item, sequence was empty.");
        var best = items[0];
        foreach (var item in items.Skip(1))
        {
            var x = attribute is null ? item : AttributePath(item, attribute);
            var y = attribute is null ? best : AttributePath(best, attribute);
            if (sign * SortCompare(x, y, caseSensitive) > 0) best = item;
        }
        return best;
    }

    private static object? Sum(Interpreter _, object? v, CallArgs a)
    {
        var attribute = a.Get(0, "attribute", null);
        object? total = a.Get(1, "start", 0L);
        foreach (var item in PyOps.Iterate(v)) total = BinaryOp("+", total, attribute is null ? item : AttributePath(item, attribute));
        return total;
    }

    private static object? Round(Interpreter _, object? v, CallArgs a)
    {
        long precision = PyOps.ToLong(a.Get(0, "precision", 0L));
        string method = PyOps.Str(a.Get(1, "method", "common"));
        double x = PyOps.ToDouble(v);
        double scale = Math.Pow(10, precision);
        return method switch
        {
            // Jinja2's "common" is Python's round(): half to even on the binary value.
            "common" => v is long or bool ? (object)PyOps.ToLong(v) : Math.Round(x, (int)Math.Clamp(precision, 0, 15), MidpointRounding.ToEven),
            "ceil" => Math.Ceiling(x * scale) / scale,
            "floor" => Math.Floor(x * scale) / scale,
            _ => throw new JinjaRuntimeError("method must be 'common', 'ceil' or 'floor'"),
        };
    }

    private static object? ToInt(object? v, CallArgs a)
    {
        var fallback = a.Get(0, "default", 0L);
        switch (v)
        {
            case long or bool: return PyOps.ToLong(v);
            case double d: return double.IsFinite(d) ? (long)Math.Truncate(d) : fallback;
            case string s:
            {
                string t = PyStrip(s, null, true, true).Replace("_", "");
                if (long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return l;
                if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && double.IsFinite(f)) return (long)Math.Truncate(f);
                return fallback;
            }
            default: return fallback;
        }
    }

    private static object? ToFloat(object? v, CallArgs a)
    {
        var fallback = a.Get(0, "default", 0.0);
        return v switch
        {
            long or bool or double => PyOps.ToDouble(v),
            string s when double.TryParse(PyStrip(s, null, true, true), NumberStyles.Float, CultureInfo.InvariantCulture, out double f) => f,
            _ => fallback,
        };
    }

    private static object? Batch(Interpreter _, object? v, CallArgs a)
    {
        long size = PyOps.ToLong(a.Get(0, "linecount", 1L));
        if (size <= 0) throw new JinjaRuntimeError("batch size must be positive");
        bool fill = a.Has(1, "fill_with");
        var filler = a.Get(1, "fill_with", null);
        var result = new List<object?>();
        List<object?>? row = null;
        foreach (var item in PyOps.Iterate(v))
        {
            row ??= [];
            row.Add(item);
            if (row.Count == size)
            {
                result.Add(row);
                row = null;
            }
        }
        if (row is not null)
        {
            while (fill && row.Count < size) row.Add(filler);
            result.Add(row);
        }
        return result;
    }

    private static string Indent(string s, CallArgs a)
    {
        var width = a.Get(0, "width", 4L);
        string indentation = width is string w ? w : new string(' ', (int)Math.Clamp(PyOps.ToLong(width), 0, 1 << 16));
        bool first = PyOps.IsTruthy(a.Get(1, "first", false));
        bool blank = PyOps.IsTruthy(a.Get(2, "blank", false));
        var lines = SplitLines(s + "\n");
        string result;
        if (blank) result = string.Join("\n" + indentation, lines);
        else
        {
            result = lines[0];
            if (lines.Count > 1) result += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indentation + l : l));
        }
        return (string)CheckSize(first ? indentation + result : result)!;
    }

    /// <summary>Jinja2's title filter: a capital after each run of spaces, dashes or opening brackets.</summary>
    private static string JinjaTitle(string s)
    {
        var parts = Regex.Split(s, @"([-\s({\[<]+)");
        return string.Concat(parts.Where(p => p.Length > 0).Select(p => char.ToUpperInvariant(p[0]) + p[1..].ToLowerInvariant()));
    }

    private static string Escape(string s) =>
        s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");

    // ---- tests --------------------------------------------------------------------------------

    private delegate bool Test(Interpreter interpreter, object? value, CallArgs args);

    private static readonly Dictionary<string, Test> Tests = new(StringComparer.Ordinal)
    {
        ["defined"] = (_, v, _) => v is not Undefined,
        ["undefined"] = (_, v, _) => v is Undefined,
        ["none"] = (_, v, _) => v is null,
        ["string"] = (_, v, _) => v is string,
        ["mapping"] = (_, v, _) => v is PyDict,
        ["iterable"] = (_, v, _) => v is string or List<object?> or PyTuple or PyDict or Undefined,
        ["sequence"] = (_, v, _) => v is string or List<object?> or PyTuple or PyDict,
        ["number"] = (_, v, _) => PyOps.IsNumber(v),
        ["integer"] = (_, v, _) => v is long,
        ["float"] = (_, v, _) => v is double,
        ["boolean"] = (_, v, _) => v is bool,
        ["true"] = (_, v, _) => v is true,
        ["false"] = (_, v, _) => v is false,
        ["callable"] = (_, v, _) => v is ICallable or Undefined, // Jinja2's Undefined is callable (calling it raises)
        ["lower"] = (_, v, _) => PyOps.Str(v) is var s && s.Any(char.IsLower) && !s.Any(char.IsUpper),
        ["upper"] = (_, v, _) => PyOps.Str(v) is var s && s.Any(char.IsUpper) && !s.Any(char.IsLower),
        ["odd"] = (_, v, _) => PyOps.ToLong(v) % 2 != 0,
        ["even"] = (_, v, _) => PyOps.ToLong(v) % 2 == 0,
        ["divisibleby"] = (_, v, a) => PyOps.ToLong(v) % PyOps.ToLong(a.Get(0, "num", 1L)) == 0,
        ["in"] = (_, v, a) => PyOps.Contains(a.Get(0, "seq", null), v),
        ["eq"] = (_, v, a) => PyOps.AreEqual(v, a.Get(0, "other", null)),
        ["equalto"] = (_, v, a) => PyOps.AreEqual(v, a.Get(0, "other", null)),
        ["=="] = (_, v, a) => PyOps.AreEqual(v, a.Get(0, "other", null)),
        ["ne"] = (_, v, a) => !PyOps.AreEqual(v, a.Get(0, "other", null)),
        ["!="] = (_, v, a) => !PyOps.AreEqual(v, a.Get(0, "other", null)),
        ["lt"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) < 0,
        ["lessthan"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) < 0,
        ["<"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) < 0,
        ["le"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) <= 0,
        ["<="] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) <= 0,
        ["gt"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) > 0,
        ["greaterthan"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) > 0,
        [">"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) > 0,
        ["ge"] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) >= 0,
        [">="] = (_, v, a) => PyOps.Compare(v, a.Get(0, "other", null)) >= 0,
        ["sameas"] = (_, v, a) => a.Get(0, "other", null) is var o && (v is null ? o is null : v is bool b ? o is bool c && b == c : ReferenceEquals(v, o)),
        ["filter"] = (_, v, _) => v is string s && Filters.ContainsKey(s),
        ["test"] = (_, v, _) => v is string s && Tests!.ContainsKey(s),
    };

    public static bool RunTest(Interpreter interpreter, string name, object? value, CallArgs args)
    {
        if (!Tests.TryGetValue(name, out var test))
            throw new JinjaRuntimeError($"no test named '{name}' (this chat-template engine does not have it)");
        return test(interpreter, value, args);
    }

    // ---- tojson -------------------------------------------------------------------------------

    /// <summary>transformers' tojson: json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...).</summary>
    private static string ToJson(object? v, CallArgs a)
    {
        a.Check("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
        bool ensureAscii = PyOps.IsTruthy(a.Get(0, "ensure_ascii", false));
        var indentArg = a.Get(1, "indent", null);
        string? indent = indentArg switch
        {
            null => null,
            string s => s,
            _ => new string(' ', (int)Math.Clamp(PyOps.ToLong(indentArg), 0, 256)),
        };
        string itemSeparator = indent is null ? ", " : ",", keySeparator = ": ";
        if (a.Get(2, "separators", null) is { } separators)
        {
            var pair = PyOps.Iterate(separators);
            if (pair.Count != 2 || pair[0] is not string i || pair[1] is not string k) throw new JinjaRuntimeError("tojson separators must be (item, key) strings");
            itemSeparator = i;
            keySeparator = k;
        }
        bool sortKeys = PyOps.IsTruthy(a.Get(3, "sort_keys", false));
        var builder = new StringBuilder();
        WriteJson(builder, v, indent, itemSeparator, keySeparator, sortKeys, ensureAscii, 0);
        return builder.ToString();
    }

    private static void WriteJson(StringBuilder b, object? v, string? indent, string itemSeparator, string keySeparator, bool sortKeys, bool ascii, int depth)
    {
        if (depth > Interpreter.MaxRecursionDepth)
            throw new JinjaRuntimeError($"tojson: value nests deeper than MaxRecursionDepth ({Interpreter.MaxRecursionDepth})");
        if (b.Length > Interpreter.MaxOutputLength)
            throw new JinjaRuntimeError($"tojson built a value longer than MaxOutputLength ({Interpreter.MaxOutputLength})");
        void NewLine(int level)
        {
            if (indent is null) return;
            b.Append('\n');
            for (int i = 0; i < level; i++) b.Append(indent);
        }
        switch (v)
        {
            case null: b.Append("null"); return;
            case bool x: b.Append(x ? "true" : "false"); return;
            case long l: b.Append(l.ToString(CultureInfo.InvariantCulture)); return;
            case double d:
                b.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : PyOps.FloatRepr(d));
                return;
            case string s: WriteJsonString(b, s, ascii); return;
            case List<object?> or PyTuple:
            {
                var items = PyOps.Iterate(v);
                if (items.Count == 0) { b.Append("[]"); return; }
                b.Append('[');
                for (int i = 0; i < items.Count; i++)
                {
                    if (i > 0) b.Append(itemSeparator);
                    NewLine(depth + 1);
                    WriteJson(b, items[i], indent, itemSeparator, keySeparator, sortKeys, ascii, depth + 1);
                }
                NewLine(depth);
                b.Append(']');
                return;
            }
            case PyDict dict:
            {
                if (dict.Count == 0) { b.Append("{}"); return; }
                var pairs = dict.Pairs.ToList();
                if (sortKeys) pairs = StableSort(pairs, (x, y) => PyOps.Compare(x.Key, y.Key), false);
                b.Append('{');
                bool first = true;
                foreach (var (key, value) in pairs)
                {
                    if (!first) b.Append(itemSeparator);
                    first = false;
                    NewLine(depth + 1);
                    string name = key switch
                    {
                        string s => s,
                        null => "null",
                        bool x => x ? "true" : "false",
                        long or double => PyOps.Str(key),
                        _ => throw new JinjaRuntimeError($"keys must be str, int, float, bool or None, not {PyOps.TypeName(key)}"),
                    };
                    WriteJsonString(b, name, ascii);
                    b.Append(keySeparator);
                    WriteJson(b, value, indent, itemSeparator, keySeparator, sortKeys, ascii, depth + 1);
                }
                NewLine(depth);
                b.Append('}');
                return;
            }
            default:
                throw new JinjaRuntimeError($"Object of type {PyOps.TypeName(v)} is not JSON serializable");
        }
    }

    private static void WriteJsonString(StringBuilder b, string s, bool ascii)
    {
        b.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': b.Append("\\\""); break;
                case '\\': b.Append("\\\\"); break;
                case '\n': b.Append("\\n"); break;
                case '\r': b.Append("\\r"); break;
                case '\t': b.Append("\\t"); break;
                case '\b': b.Append("\\b"); break;
                case '\f': b.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7f)) b.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else b.Append(c);
                    break;
            }
        }
        b.Append('"');
    }
}
