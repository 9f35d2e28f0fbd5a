using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>Jinja2's filters over lists, tuples and mappings: join, map, select/reject, sorting, unique, min/max, sum, batch.</summary>
internal static class SequenceFilters
{
    internal static object? Join(Interpreter _, object? v, CallArgs a)
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
        if (attribute is long index) return Builtins.GetItem(item, index);
        foreach (var part in PyOps.Str(attribute).Split('.'))
            item = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? Builtins.GetItem(item, n) : Builtins.GetItem(item, part);
        return item;
    }

    internal static object? Map(Interpreter interpreter, object? v, CallArgs a)
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
        return items.Select(i => JinjaFilters.RunFilter(interpreter, filter, i, rest)).ToList();
    }

    internal static object? Select(Interpreter interpreter, object? v, CallArgs a, bool keep, bool byAttribute)
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
            bool passes = test is null ? PyOps.IsTruthy(probe) : JinjaTests.Run(interpreter, test, probe, testArgs);
            if (passes == keep) result.Add(item);
        }
        return result;
    }

    private static int SortCompare(object? x, object? y, bool caseSensitive)
    {
        if (!caseSensitive && x is string a && y is string b) return PyOps.CompareCodePoints(a.ToLowerInvariant(), b.ToLowerInvariant());
        return PyOps.Compare(x, y);
    }

    internal static object? DictSort(Interpreter _, object? v, CallArgs a)
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
    internal static List<T> StableSort<T>(List<T> items, Comparison<T> compare, bool reverse)
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

    internal static object? Sort(Interpreter _, object? v, CallArgs a)
    {
        bool reverse = PyOps.IsTruthy(a.Get(0, "reverse", false));
        bool caseSensitive = PyOps.IsTruthy(a.Get(1, "case_sensitive", false));
        var attribute = a.Get(2, "attribute", null);
        var items = PyOps.Iterate(v).ToList();
        return StableSort(items, (x, y) => SortCompare(attribute is null ? x : AttributePath(x, attribute),
            attribute is null ? y : AttributePath(y, attribute), caseSensitive), reverse);
    }

    internal static object? Unique(Interpreter _, object? v, CallArgs a)
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

    internal static object? MinMax(object? v, CallArgs a, int sign)
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

    internal static object? Sum(Interpreter _, object? v, CallArgs a)
    {
        var attribute = a.Get(0, "attribute", null);
        object? total = a.Get(1, "start", 0L);
        foreach (var item in PyOps.Iterate(v)) total = Builtins.BinaryOp("+", total, attribute is null ? item : AttributePath(item, attribute));
        return total;
    }

    internal static object? Batch(Interpreter _, object? v, CallArgs a)
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
}
