using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>The Python str, list and dict methods templates call (message.content.strip(), tool.get('x')).</summary>
internal static class PyMethods
{
    internal static readonly HashSet<string> StringMethods =
    [
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "replace", "lower", "upper", "title",
        "capitalize", "swapcase", "find", "rfind", "index", "rindex", "count", "join", "isdigit", "isalpha", "isalnum", "isspace",
        "islower", "isupper", "isnumeric", "isdecimal", "format", "zfill", "center", "ljust", "rjust", "removeprefix", "removesuffix",
        "partition", "rpartition",
    ];

    internal static readonly HashSet<string> DictMethods = ["items", "get", "keys", "values", "copy"];

    private static string StringArg(CallArgs a, int position, string name, string method)
    {
        var v = a.Get(position, name, null);
        return v as string ?? throw new JinjaRuntimeError($"str.{method}() argument must be str, not {PyOps.TypeName(v)}");
    }

    private static string? CharsArg(CallArgs a, string method)
    {
        var v = a.Get(0, "chars", null);
        return v is null ? null : v as string ?? throw new JinjaRuntimeError($"str.{method}() arg must be None or str");
    }

    internal static string PyStrip(string s, string? chars, bool left, bool right)
    {
        int start = 0, end = s.Length;
        bool Strips(char c) => chars is null ? Array.IndexOf(Lexer.PythonWhitespace, c) >= 0 : chars.Contains(c);
        if (left) while (start < end && Strips(s[start])) start++;
        if (right) while (end > start && Strips(s[end - 1])) end--;
        return s[start..end];
    }

    internal static List<object?> PySplit(string s, string? separator, long maxSplit)
    {
        var parts = new List<object?>();
        if (separator is null)
        {
            int i = 0;
            while (true)
            {
                while (i < s.Length && Array.IndexOf(Lexer.PythonWhitespace, s[i]) >= 0) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && parts.Count >= maxSplit)
                {
                    parts.Add(s[i..]);
                    break;
                }
                int start = i;
                while (i < s.Length && Array.IndexOf(Lexer.PythonWhitespace, s[i]) < 0) i++;
                parts.Add(s[start..i]);
            }
            return parts;
        }
        if (separator.Length == 0) throw new JinjaRuntimeError("empty separator");
        int from = 0;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int at = s.IndexOf(separator, from, StringComparison.Ordinal);
            if (at < 0) break;
            parts.Add(s[from..at]);
            from = at + separator.Length;
        }
        parts.Add(s[from..]);
        return parts;
    }

    /// <summary>Python's str.splitlines: \n, \r\n, \r and the other Unicode line boundaries; no trailing empty line.</summary>
    internal static List<string> SplitLines(string s)
    {
        var lines = new List<string>();
        int start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is '\n' or '\r' or '\v' or '\f' or '\u001c' or '\u001d' or '\u001e' or '\u0085' or '\u2028' or '\u2029')
            {
                lines.Add(s[start..i]);
                if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
                start = i + 1;
            }
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    internal static string PyTitle(string s)
    {
        var builder = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            bool cased = char.IsUpper(c) || char.IsLower(c);
            builder.Append(cased ? (previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)) : c);
            previousCased = cased;
        }
        return builder.ToString();
    }

    internal static string PyCapitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    private static bool AffixMatch(string s, object? affix, string method, Func<string, bool> test) => affix switch
    {
        string one => test(one),
        PyTuple tuple => tuple.Items.Any(i => i is string t ? test(t) : throw new JinjaRuntimeError($"tuple for {method} must only contain str")),
        _ => throw new JinjaRuntimeError($"{method} first arg must be str or a tuple of str, not {PyOps.TypeName(affix)}"),
    };

    internal static object? CallStringMethod(string s, string name, CallArgs a)
    {
        switch (name)
        {
            case "strip": return PyStrip(s, CharsArg(a, name), true, true);
            case "lstrip": return PyStrip(s, CharsArg(a, name), true, false);
            case "rstrip": return PyStrip(s, CharsArg(a, name), false, true);
            case "split":
            case "rsplit":
            {
                var separator = a.Get(0, "sep", null);
                long maxSplit = PyOps.ToLong(a.Get(1, "maxsplit", -1L));
                if (separator is not null and not string) throw new JinjaRuntimeError("must be str or None");
                if (name == "rsplit" && maxSplit >= 0)
                {
                    // rsplit from the right: reverse, split, reverse back.
                    string Reverse(string x) => string.Concat(x.EnumerateRunes().Reverse().Select(r => r.ToString()));
                    var reversed = PySplit(Reverse(s), separator is string sep ? Reverse(sep) : null, maxSplit);
                    reversed.Reverse();
                    return reversed.Select(p => (object?)Reverse((string)p!)).ToList();
                }
                return PySplit(s, (string?)separator, maxSplit);
            }
            case "splitlines": return SplitLines(s).Select(l => (object?)l).ToList();
            case "startswith": return AffixMatch(s, a.Get(0, "prefix", null), name, p => s.StartsWith(p, StringComparison.Ordinal));
            case "endswith": return AffixMatch(s, a.Get(0, "suffix", null), name, p => s.EndsWith(p, StringComparison.Ordinal));
            case "replace":
            {
                string old = StringArg(a, 0, "old", name), replacement = StringArg(a, 1, "new", name);
                long count = PyOps.ToLong(a.Get(2, "count", -1L));
                return ReplaceCount(s, old, replacement, count);
            }
            case "lower": return s.ToLowerInvariant();
            case "upper": return s.ToUpperInvariant();
            case "title": return PyTitle(s);
            case "capitalize": return PyCapitalize(s);
            case "swapcase": return string.Concat(s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)));
            case "find" or "index":
            {
                int at = s.IndexOf(StringArg(a, 0, "sub", name), StringComparison.Ordinal);
                if (at < 0 && name == "index") throw new JinjaRuntimeError("substring not found");
                return (long)(at < 0 ? -1 : CodePointIndex(s, at));
            }
            case "rfind" or "rindex":
            {
                int at = s.LastIndexOf(StringArg(a, 0, "sub", name), StringComparison.Ordinal);
                if (at < 0 && name == "rindex") throw new JinjaRuntimeError("substring not found");
                return (long)(at < 0 ? -1 : CodePointIndex(s, at));
            }
            case "count":
            {
                string sub = StringArg(a, 0, "sub", name);
                if (sub.Length == 0) return PyOps.Length(s) + 1;
                long n = 0;
                for (int at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) n++;
                return n;
            }
            case "join":
            {
                var items = PyOps.Iterate(a.Get(0, "iterable", null));
                return Builtins.CheckSize(string.Join(s, items.Select(i => i as string
                    ?? throw new JinjaRuntimeError($"sequence item: expected str instance, {PyOps.TypeName(i)} found"))));
            }
            case "isdigit" or "isdecimal" or "isnumeric": return s.Length > 0 && s.All(char.IsDigit);
            case "isalpha": return s.Length > 0 && s.All(char.IsLetter);
            case "isalnum": return s.Length > 0 && s.All(char.IsLetterOrDigit);
            case "isspace": return s.Length > 0 && s.All(c => Array.IndexOf(Lexer.PythonWhitespace, c) >= 0);
            case "islower": return s.Any(char.IsLower) && !s.Any(char.IsUpper);
            case "isupper": return s.Any(char.IsUpper) && !s.Any(char.IsLower);
            case "format": return BraceFormat(s, a);
            case "zfill":
            {
                int width = (int)PyOps.ToLong(a.Get(0, "width", 0L));
                if (s.Length >= width) return s;
                bool signed = s.Length > 0 && s[0] is '+' or '-';
                return signed ? s[0] + new string('0', width - s.Length) + s[1..] : new string('0', width - s.Length) + s;
            }
            case "center" or "ljust" or "rjust":
            {
                int width = (int)Math.Min(PyOps.ToLong(a.Get(0, "width", 0L)), Interpreter.MaxOutputLength);
                string fill = a.Get(1, "fillchar", " ") as string ?? " ";
                int pad = width - s.Length;
                if (pad <= 0) return s;
                if (name == "ljust") return s + new string(fill[0], pad);
                if (name == "rjust") return new string(fill[0], pad) + s;
                int left = pad / 2 + (pad & width & 1);
                return new string(fill[0], left) + s + new string(fill[0], pad - left);
            }
            case "removeprefix":
            {
                string prefix = StringArg(a, 0, "prefix", name);
                return s.StartsWith(prefix, StringComparison.Ordinal) ? s[prefix.Length..] : s;
            }
            case "removesuffix":
            {
                string suffix = StringArg(a, 0, "suffix", name);
                return suffix.Length > 0 && s.EndsWith(suffix, StringComparison.Ordinal) ? s[..^suffix.Length] : s;
            }
            case "partition" or "rpartition":
            {
                string sep = StringArg(a, 0, "sep", name);
                int at = name == "partition" ? s.IndexOf(sep, StringComparison.Ordinal) : s.LastIndexOf(sep, StringComparison.Ordinal);
                if (at < 0) return name == "partition" ? new PyTuple([s, "", ""]) : new PyTuple(["", "", s]);
                return new PyTuple([s[..at], sep, s[(at + sep.Length)..]]);
            }
        }
        throw new JinjaRuntimeError($"str.{name}() is not supported by this engine");
    }

    private static int CodePointIndex(string s, int utf16Index)
    {
        int count = 0;
        for (int i = 0; i < utf16Index; i++)
            if (!char.IsLowSurrogate(s[i])) count++;
        return count;
    }

    internal static string ReplaceCount(string s, string old, string replacement, long count)
    {
        if (count < 0 && old.Length > 0) return (string)Builtins.CheckSize(s.Replace(old, replacement, StringComparison.Ordinal))!;
        var builder = new StringBuilder();
        if (old.Length == 0)
        {
            // Python inserts the replacement between every character (and at both ends).
            long done = 0;
            foreach (var rune in s.EnumerateRunes())
            {
                if (count < 0 || done < count) { builder.Append(replacement); done++; }
                builder.Append(rune.ToString());
            }
            if (count < 0 || done < count) builder.Append(replacement);
            return (string)Builtins.CheckSize(builder.ToString())!;
        }
        int from = 0;
        for (long n = 0; n < count; n++)
        {
            int at = s.IndexOf(old, from, StringComparison.Ordinal);
            if (at < 0) break;
            builder.Append(s, from, at - from).Append(replacement);
            from = at + old.Length;
        }
        builder.Append(s, from, s.Length - from);
        return (string)Builtins.CheckSize(builder.ToString())!;
    }

    /// <summary>str.format with {} / {0} / {name} fields (no format specs).</summary>
    private static string BraceFormat(string format, CallArgs a)
    {
        var builder = new StringBuilder();
        int automatic = 0;
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c == '{' && i + 1 < format.Length && format[i + 1] == '{') { builder.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < format.Length && format[i + 1] == '}') { builder.Append('}'); i++; continue; }
            if (c != '{') { builder.Append(c); continue; }
            int close = format.IndexOf('}', i);
            if (close < 0) throw new JinjaRuntimeError("Single '{' encountered in format string");
            string field = format[(i + 1)..close];
            if (field.Contains(':') || field.Contains('!') || field.Contains('.') || field.Contains('['))
                throw new JinjaRuntimeError($"str.format field '{{{field}}}' uses a format spec this engine does not support");
            object? value;
            if (field.Length == 0) value = a.Positional.ElementAtOrDefault(automatic++);
            else if (int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out int n)) value = a.Positional.ElementAtOrDefault(n);
            else value = a.Named.FirstOrDefault(k => k.Key == field).Value;
            builder.Append(PyOps.Str(value));
            i = close;
        }
        return builder.ToString();
    }

    internal static object? CallListMethod(List<object?> list, string name, CallArgs a)
    {
        var item = a.Get(0, "value", null);
        if (name == "count") return (long)list.Count(x => PyOps.AreEqual(x, item));
        int at = list.FindIndex(x => PyOps.AreEqual(x, item));
        if (at < 0) throw new JinjaRuntimeError($"{PyRepr.Repr(item)} is not in list");
        return (long)at;
    }

    internal static object? CallDictMethod(PyDict dict, string name, CallArgs a)
    {
        switch (name)
        {
            case "items": return dict.Pairs.Select(p => (object?)new PyTuple([p.Key, p.Value])).ToList();
            case "keys": return dict.Keys.ToList();
            case "values": return dict.Pairs.Select(p => p.Value).ToList();
            case "get": return dict.TryGet(a.Get(0, "key", null), out var value) ? value : a.Get(1, "default", null);
            default:
            {
                var copy = new PyDict();
                foreach (var (k, v) in dict.Pairs) copy.Set(k, v);
                return copy;
            }
        }
    }
}
