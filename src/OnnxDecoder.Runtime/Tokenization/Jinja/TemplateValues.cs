
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
