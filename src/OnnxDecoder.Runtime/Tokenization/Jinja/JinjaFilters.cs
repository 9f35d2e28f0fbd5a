using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Jinja2's built-in filters (the ones chat templates use) by name; the sequence filters live in
/// <see cref="SequenceFilters"/>, tojson in <see cref="TojsonFilter"/>, and this file keeps the string and number ones.
/// </summary>
internal static class JinjaFilters
{
    private delegate object? Filter(Interpreter interpreter, object? value, CallArgs args);

    private static readonly Dictionary<string, Filter> Filters = new(StringComparer.Ordinal)
    {
        ["trim"] = (_, v, a) => PyMethods.PyStrip(AsString(v, "trim"), a.Get(0, "chars", null) as string, true, true),
        ["tojson"] = (_, v, a) => TojsonFilter.ToJson(v, a),
        ["items"] = (_, v, _) => v is Undefined ? new List<object?>() : v is PyDict d
            ? d.Pairs.Select(p => (object?)new PyTuple([p.Key, p.Value])).ToList()
            : throw new JinjaRuntimeError($"can only get item pairs from a mapping, not {PyOps.TypeName(v)}"),
        ["length"] = (_, v, _) => PyOps.Length(v),
        ["count"] = (_, v, _) => PyOps.Length(v),
        ["join"] = (i, v, a) => SequenceFilters.Join(i, v, a),
        ["replace"] = (_, v, a) => PyMethods.ReplaceCount(PyOps.Str(v), PyOps.Str(a.Get(0, "old", "")), PyOps.Str(a.Get(1, "new", "")),
            a.Get(2, "count", null) is { } count ? PyOps.ToLong(count) : -1),
        ["default"] = Default,
        ["d"] = Default,
        ["first"] = (_, v, _) => PyOps.Iterate(v) is { Count: > 0 } items ? items[0] : new Undefined("No first item, sequence was empty."),
        ["last"] = (_, v, _) => PyOps.Iterate(v) is { Count: > 0 } items ? items[^1] : new Undefined("No last item, sequence was empty."),
        ["map"] = SequenceFilters.Map,
        ["select"] = (i, v, a) => SequenceFilters.Select(i, v, a, keep: true, byAttribute: false),
        ["reject"] = (i, v, a) => SequenceFilters.Select(i, v, a, keep: false, byAttribute: false),
        ["selectattr"] = (i, v, a) => SequenceFilters.Select(i, v, a, keep: true, byAttribute: true),
        ["rejectattr"] = (i, v, a) => SequenceFilters.Select(i, v, a, keep: false, byAttribute: true),
        ["dictsort"] = SequenceFilters.DictSort,
        ["indent"] = (_, v, a) => Indent(PyOps.Str(v), a),
        ["string"] = (_, v, _) => PyOps.Str(v),
        ["int"] = (_, v, a) => ToInt(v, a),
        ["float"] = (_, v, a) => ToFloat(v, a),
        ["list"] = (_, v, _) => PyOps.Iterate(v).ToList(),
        ["unique"] = SequenceFilters.Unique,
        ["upper"] = (_, v, _) => PyOps.Str(v).ToUpperInvariant(),
        ["lower"] = (_, v, _) => PyOps.Str(v).ToLowerInvariant(),
        ["capitalize"] = (_, v, _) => PyMethods.PyCapitalize(PyOps.Str(v)),
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
        ["sum"] = SequenceFilters.Sum,
        ["min"] = (_, v, a) => SequenceFilters.MinMax(v, a, sign: -1),
        ["max"] = (_, v, a) => SequenceFilters.MinMax(v, a, sign: 1),
        ["reverse"] = (_, v, _) => v is string s
            ? string.Concat(s.EnumerateRunes().Reverse().Select(r => r.ToString()))
            : PyOps.Iterate(v).Reverse().ToList(),
        ["sort"] = SequenceFilters.Sort,
        ["batch"] = SequenceFilters.Batch,
        ["wordcount"] = (_, v, _) => (long)Regex.Matches(PyOps.Str(v), @"\w+").Count,
        ["center"] = (_, v, a) => PyMethods.CallStringMethod(PyOps.Str(v), "center", new CallArgs([a.Get(0, "width", 80L)], [])),
        ["format"] = (_, v, a) => Builtins.PercentFormat(PyOps.Str(v), a.Positional),
        ["attr"] = (_, v, a) => Builtins.GetAttribute(v, PyOps.Str(a.Get(0, "name", ""))),
        ["pprint"] = (_, v, _) => PyRepr.Repr(v),
    };

    /// <summary>Whether a filter exists: Jinja2 refuses an unknown filter when the template is compiled.</summary>
    public static bool HasFilter(string name) => Filters.ContainsKey(name);

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
                string t = PyMethods.PyStrip(s, null, true, true).Replace("_", "");
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
            string s when double.TryParse(PyMethods.PyStrip(s, null, true, true), NumberStyles.Float, CultureInfo.InvariantCulture, out double f) => f,
            _ => fallback,
        };
    }

    private static string Indent(string s, CallArgs a)
    {
        var width = a.Get(0, "width", 4L);
        string indentation = width is string w ? w : new string(' ', (int)Math.Clamp(PyOps.ToLong(width), 0, 1 << 16));
        bool first = PyOps.IsTruthy(a.Get(1, "first", false));
        bool blank = PyOps.IsTruthy(a.Get(2, "blank", false));
        var lines = PyMethods.SplitLines(s + "\n");
        string result;
        if (blank) result = string.Join("\n" + indentation, lines);
        else
        {
            result = lines[0];
            if (lines.Count > 1) result += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indentation + l : l));
        }
        return (string)Builtins.CheckSize(first ? indentation + result : result)!;
    }

    /// <summary>Jinja2's title filter: a capital after each run of spaces, dashes or opening brackets.</summary>
    private static string JinjaTitle(string s)
    {
        var parts = Regex.Split(s, @"([-\s({\[<]+)");
        return string.Concat(parts.Where(p => p.Length > 0).Select(p => char.ToUpperInvariant(p[0]) + p[1..].ToLowerInvariant()));
    }

    private static string Escape(string s) =>
        s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");
}
