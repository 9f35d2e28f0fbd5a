namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>Names bound by a for loop body, a macro call or the template's top level; lookups walk outwards.</summary>
internal sealed class Scope(Scope? parent)
{
    // Most scopes (a loop iteration: loop and the target) hold a handful of names: a short array is
    // cheaper to make and search than a dictionary; past 8 names a dictionary takes over.
    private string[]? names;
    private object?[]? values;
    private int count;
    private Dictionary<string, object?>? many;

    public Scope? Parent { get; } = parent;

    public void Set(string name, object? value)
    {
        if (many is not null)
        {
            many[name] = value;
            return;
        }
        for (int i = 0; i < count; i++)
        {
            if (names![i] == name)
            {
                values![i] = value;
                return;
            }
        }
        if (count == 8)
        {
            many = new Dictionary<string, object?>(16, StringComparer.Ordinal);
            for (int i = 0; i < count; i++) many[names![i]] = values![i];
            many[name] = value;
            return;
        }
        names ??= new string[8];
        values ??= new object?[8];
        names[count] = name;
        values[count++] = value;
    }

    public bool TryGet(string name, out object? value)
    {
        for (var scope = this; scope is not null; scope = scope.Parent)
        {
            if (scope.many is not null)
            {
                if (scope.many.TryGetValue(name, out value)) return true;
                continue;
            }
            for (int i = 0; i < scope.count; i++)
            {
                if (scope.names![i] == name)
                {
                    value = scope.values![i];
                    return true;
                }
            }
        }
        value = null;
        return false;
    }
}

/// <summary>What the loop variable <c>loop</c> holds: position in the (filtered) items and its neighbours.</summary>
internal sealed class LoopContext(IReadOnlyList<object?> items)
{
    public IReadOnlyList<object?> Items { get; } = items;

    public int Index0 { get; set; }

    public object? Attribute(string name) => name switch
    {
        "index" => (long)Index0 + 1,
        "index0" => (long)Index0,
        "revindex" => (long)(Items.Count - Index0),
        "revindex0" => (long)(Items.Count - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == Items.Count - 1,
        "length" => (long)Items.Count,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? Items[Index0 - 1] : new Undefined("there is no previous item"),
        "nextitem" => Index0 + 1 < Items.Count ? Items[Index0 + 1] : new Undefined("there is no next item"),
        "cycle" => new BuiltinFunction("loop.cycle", (_, args) =>
        {
            if (args.Positional.Count == 0) throw new JinjaRuntimeError("no items for cycling given");
            return args.Positional[Index0 % args.Positional.Count];
        }),
        _ => new Undefined($"'LoopContext' object has no attribute '{name}'"),
    };
}

/// <summary>A {% macro %} (or the body of a {% call %} block, as caller()).</summary>
internal sealed class Macro(string name, List<MacroParameter> parameters, List<Stmt> body, Scope definedIn, bool takesVarargs, bool takesKwargs)
    : ICallable
{
    public string Name { get; } = name;

    public object? Call(Interpreter interpreter, CallArgs args) => interpreter.CallMacro(this, parameters, body, definedIn, takesVarargs, takesKwargs, args);
}
