namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>Jinja2's built-in tests (value is name(args)), the ones chat templates use.</summary>
internal static class JinjaTests
{
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
        ["filter"] = (_, v, _) => v is string s && JinjaFilters.HasFilter(s),
        ["test"] = (_, v, _) => v is string s && Tests!.ContainsKey(s),
    };

    public static bool Run(Interpreter interpreter, string name, object? value, CallArgs args)
    {
        if (!Tests.TryGetValue(name, out var test))
            throw new JinjaRuntimeError($"no test named '{name}' (this chat-template engine does not have it)");
        return test(interpreter, value, args);
    }

    public static bool Has(string name) => Tests.ContainsKey(name);
}
