using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>transformers' tojson filter: Python's json.dumps over the template's values.</summary>
internal static class TojsonFilter
{
    /// <summary>transformers' tojson: json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...).</summary>
    public static string ToJson(object? v, CallArgs a)
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
                b.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : PyRepr.FloatRepr(d));
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
                if (sortKeys) pairs = SequenceFilters.StableSort(pairs, (x, y) => PyOps.Compare(x.Key, y.Key), false);
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
