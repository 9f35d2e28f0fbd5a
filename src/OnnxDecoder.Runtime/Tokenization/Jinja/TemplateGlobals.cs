namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>The global names every template sees: range, namespace, dict, raise_exception and strftime_now.</summary>
internal static class TemplateGlobals
{
    /// <summary>The globals; strftime_now reads <paramref name="clock"/>, the only way a template learns the time.</summary>
    public static IEnumerable<KeyValuePair<string, object?>> All(Func<DateTime> clock)
    {
        yield return new("range", new BuiltinFunction("range", (_, a) => Builtins.Range(a)));
        yield return new("namespace", new BuiltinFunction("namespace", (_, a) =>
        {
            var ns = new Namespace();
            foreach (var p in a.Positional)
                if (p is PyDict d) foreach (var (k, v) in d.Pairs) ns.Attributes[PyOps.Str(k)] = v;
            foreach (var (k, v) in a.Named) ns.Attributes[k] = v;
            return ns;
        }));
        yield return new("dict", new BuiltinFunction("dict", (_, a) =>
        {
            var dict = new PyDict();
            foreach (var p in a.Positional)
                if (p is PyDict d) foreach (var (k, v) in d.Pairs) dict.Set(k, v);
            foreach (var (k, v) in a.Named) dict.Set(k, v);
            return dict;
        }));
        yield return new("raise_exception", new BuiltinFunction("raise_exception", (_, a) =>
            throw new JinjaRuntimeError($"raise_exception: {PyOps.Str(a.Get(0, "message", ""))}")));
        yield return new("strftime_now", new BuiltinFunction("strftime_now", (_, a) =>
            Builtins.Strftime(clock(), a.Get(0, "format", null) as string ?? throw new JinjaRuntimeError("strftime_now(format) needs a format string"))));
    }
}
