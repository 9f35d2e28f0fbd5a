using System.Text;

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

/// <summary>
/// Renders a parsed template. Sandboxed: values are only the data types of <see cref="PyOps"/>, nothing reaches
/// .NET objects, files or the clock except through the <c>strftime_now</c> the caller supplies; loops,
/// output and macro recursion are bounded by the constants below.
/// </summary>
internal sealed partial class Interpreter
{
    /// <summary>Most loop iterations one render may run (all loops together).</summary>
    public const int MaxLoopIterations = 1_000_000;

    /// <summary>Longest output, and longest string or list one operation may build, in characters or items.</summary>
    public const int MaxOutputLength = 16 * 1024 * 1024;

    /// <summary>Deepest nesting of macro calls (and of values printed or serialised).</summary>
    public const int MaxRecursionDepth = 100;

    /// <summary>Most items range() makes, as Jinja2's sandbox allows.</summary>
    public const int MaxRange = 100_000;

    private enum Flow { Normal, Break, Continue }

    private readonly string templateName;
    private readonly Func<DateTime> clock;
    private long iterations;
    private int callDepth;
    private Node? current;

    public Interpreter(string templateName, Func<DateTime> clock)
    {
        this.templateName = templateName;
        this.clock = clock;
    }

    public string Render(List<Stmt> body, IEnumerable<KeyValuePair<string, object?>> variables)
    {
        var globals = new Scope(null);
        foreach (var (name, value) in Globals()) globals.Set(name, value);
        var top = new Scope(globals);
        foreach (var (name, value) in variables) top.Set(name, value);
        var output = new StringBuilder();
        try
        {
            Execute(body, top, output);
        }
        catch (JinjaRuntimeError e)
        {
            throw Located(e.Message);
        }
        catch (InsufficientExecutionStackException)
        {
            throw Located("the template nests too deeply for the stack");
        }
        catch (Exception e) when (e is not TemplateError)
        {
            // A value combination the engine does not expect must still be one located line, never a crash.
            throw Located($"this chat-template engine cannot evaluate this ({e.GetType().Name}: {e.Message})");
        }
        return output.ToString();
    }

    private TemplateError Located(string message)
    {
        // raise_exception's message is the template author's own words; other errors say which construct failed.
        string construct = current is null || message.StartsWith("raise_exception: ", StringComparison.Ordinal) ? "" : $" (in {Describe(current)})";
        return new(templateName, current?.Line ?? 1, current?.Column ?? 1, message + construct);
    }

    private static string Describe(Node node) => node switch
    {
        GetAttr a => $"attribute .{a.Name}",
        GetItem => "subscript [...]",
        CallExpr { Callee: NameRef n } => $"call {n.Name}()",
        CallExpr { Callee: GetAttr a } => $"call .{a.Name}()",
        CallExpr => "call",
        FilterExpr f => $"filter |{f.Name}",
        TestExpr t => $"test 'is {t.Name}'",
        Binary b => $"operator {b.Op}",
        Unary u => $"operator {u.Op}",
        Compare => "comparison",
        Conditional => "inline if",
        ExprOut => "{{ ... }}",
        IfStmt => "{% if %}",
        ForStmt => "{% for %}",
        SetStmt => "{% set %}",
        SetBlockStmt => "{% set %} block",
        MacroStmt m => $"{{% macro {m.Name} %}}",
        CallBlockStmt => "{% call %}",
        FilterBlockStmt => "{% filter %}",
        _ => node.GetType().Name,
    };

    private IEnumerable<KeyValuePair<string, object?>> Globals()
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

    private void Emit(StringBuilder output, string text)
    {
        if (output.Length + text.Length > MaxOutputLength)
            throw new JinjaRuntimeError($"output is longer than MaxOutputLength ({MaxOutputLength} characters)");
        output.Append(text);
    }

    private Flow Execute(List<Stmt> body, Scope scope, StringBuilder output)
    {
        foreach (var statement in body)
        {
            current = statement;
            var flow = ExecuteOne(statement, scope, output);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private Flow ExecuteOne(Stmt statement, Scope scope, StringBuilder output)
    {
        switch (statement)
        {
            case TextOut text:
                Emit(output, text.Text);
                return Flow.Normal;
            case ExprOut value:
                Emit(output, PyOps.Str(Evaluate(value.Value, scope)));
                return Flow.Normal;
            case IfStmt branch:
                foreach (var (test, body) in branch.Branches)
                {
                    if (PyOps.IsTruthy(Evaluate(test, scope))) return Execute(body, scope, output);
                }
                return branch.Else is null ? Flow.Normal : Execute(branch.Else, scope, output);
            case ForStmt loop:
                return ExecuteFor(loop, scope, output);
            case SetStmt set:
            {
                var value = Evaluate(set.Value, scope);
                current = set;
                if (set.Attribute is not null)
                {
                    if (!scope.TryGet(set.Target.Names[0], out var target) || target is not Namespace ns)
                        throw new JinjaRuntimeError($"cannot assign attribute on non-namespace object '{set.Target.Names[0]}'");
                    ns.Attributes[set.Attribute] = value;
                }
                else Assign(set.Target, value, scope);
                return Flow.Normal;
            }
            case SetBlockStmt block:
            {
                var captured = new StringBuilder();
                Execute(block.Body, scope, captured);
                current = block;
                object? value = captured.ToString();
                foreach (var filter in block.Filters) value = ApplyFilter(filter, value, scope);
                scope.Set(block.Name, value);
                return Flow.Normal;
            }
            case MacroStmt macro:
                scope.Set(macro.Name, new Macro(macro.Name, macro.Parameters, macro.Body, scope, macro.TakesVarargs, macro.TakesKwargs));
                return Flow.Normal;
            case CallBlockStmt call:
            {
                var caller = new Macro("caller", call.CallerParameters, call.Body, scope, false, false);
                var callee = Evaluate(call.Call.Callee, scope);
                var args = EvaluateArguments(call.Call.Args, scope);
                args.Named.Add(new("caller", caller));
                current = call;
                Emit(output, PyOps.Str(Invoke(callee, args)));
                return Flow.Normal;
            }
            case FilterBlockStmt block:
            {
                var captured = new StringBuilder();
                Execute(block.Body, scope, captured);
                current = block;
                object? value = captured.ToString();
                foreach (var filter in block.Filters) value = ApplyFilter(filter, value, scope);
                Emit(output, PyOps.Str(value));
                return Flow.Normal;
            }
            case GenerationStmt generation:
                return Execute(generation.Body, scope, output);
            case BreakStmt:
                return Flow.Break;
            case ContinueStmt:
                return Flow.Continue;
            default:
                throw new JinjaRuntimeError($"statement {statement.GetType().Name} is not supported");
        }
    }

    private Flow ExecuteFor(ForStmt loop, Scope scope, StringBuilder output)
    {
        var source = Evaluate(loop.Iterable, scope);
        current = loop;
        IReadOnlyList<object?> items = PyOps.Iterate(source);
        if (loop.Filter is not null)
        {
            var kept = new List<object?>();
            foreach (var item in items)
            {
                CountIteration();
                var probe = new Scope(scope);
                Assign(loop.Target, item, probe);
                if (PyOps.IsTruthy(Evaluate(loop.Filter, probe))) kept.Add(item);
            }
            items = kept;
        }
        if (items.Count == 0)
            return loop.Else is null ? Flow.Normal : Execute(loop.Else, scope, output);
        var context = new LoopContext(items);
        for (int i = 0; i < items.Count; i++)
        {
            CountIteration();
            context.Index0 = i;
            var body = new Scope(scope);
            body.Set("loop", context);
            current = loop;
            Assign(loop.Target, items[i], body);
            if (Execute(loop.Body, body, output) == Flow.Break) break;
        }
        return Flow.Normal;
    }

    private void CountIteration()
    {
        if (++iterations > MaxLoopIterations)
            throw new JinjaRuntimeError($"loops ran more than MaxLoopIterations ({MaxLoopIterations}) iterations");
    }

    private static void Assign(Target target, object? value, Scope scope)
    {
        if (!target.IsTuple)
        {
            scope.Set(target.Names[0], value);
            return;
        }
        var items = PyOps.Iterate(value);
        if (items.Count != target.Names.Count)
            throw new JinjaRuntimeError(items.Count > target.Names.Count
                ? $"too many values to unpack (expected {target.Names.Count})"
                : $"not enough values to unpack (expected {target.Names.Count}, got {items.Count})");
        for (int i = 0; i < items.Count; i++) scope.Set(target.Names[i], items[i]);
    }

    internal object? CallMacro(Macro macro, List<MacroParameter> parameters, List<Stmt> body, Scope definedIn, bool takesVarargs, bool takesKwargs, CallArgs args)
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        if (++callDepth > MaxRecursionDepth)
            throw new JinjaRuntimeError($"macro calls nest deeper than MaxRecursionDepth ({MaxRecursionDepth})");
        var saved = current;
        try
        {
            var scope = new Scope(definedIn);
            var varargs = new List<object?>();
            for (int i = 0; i < args.Positional.Count; i++)
            {
                if (i < parameters.Count) scope.Set(parameters[i].Name, args.Positional[i]);
                else if (takesVarargs) varargs.Add(args.Positional[i]);
                else throw new JinjaRuntimeError($"macro '{macro.Name}' takes not more than {parameters.Count} argument(s)");
            }
            var kwargs = new PyDict();
            foreach (var (name, value) in args.Named)
            {
                int at = parameters.FindIndex(p => p.Name == name);
                if (at >= 0)
                {
                    if (at < args.Positional.Count) throw new JinjaRuntimeError($"macro '{macro.Name}' got multiple values for argument '{name}'");
                    scope.Set(name, value);
                }
                else if (name == "caller") scope.Set("caller", value);
                else if (takesKwargs) kwargs.Set(name, value);
                else throw new JinjaRuntimeError($"macro '{macro.Name}' takes no keyword argument '{name}'");
            }
            for (int i = args.Positional.Count; i < parameters.Count; i++)
            {
                if (args.Named.Any(n => n.Key == parameters[i].Name)) continue;
                scope.Set(parameters[i].Name, parameters[i].Default is { } fallback
                    ? Evaluate(fallback, scope)
                    : new Undefined($"parameter '{parameters[i].Name}' was not provided"));
            }
            scope.Set("varargs", new PyTuple([.. varargs]));
            scope.Set("kwargs", kwargs);
            var output = new StringBuilder();
            Execute(body, scope, output);
            return output.ToString();
        }
        finally
        {
            callDepth--;
            current = saved;
        }
    }

    // ---- expressions --------------------------------------------------------------------------

    internal object? Evaluate(Expr expression, Scope scope)
    {
        switch (expression)
        {
            case Literal literal:
                return literal.Value;
            case NameRef name:
                return scope.TryGet(name.Name, out var value) ? value : new Undefined($"'{name.Name}' is undefined");
            case ListExpr list:
                return list.Items.Select(i => Evaluate(i, scope)).ToList();
            case TupleExpr tuple:
                return new PyTuple([.. tuple.Items.Select(i => Evaluate(i, scope))]);
            case DictExpr dict:
            {
                var result = new PyDict();
                foreach (var (k, v) in dict.Items) result.Set(Evaluate(k, scope), Evaluate(v, scope));
                return result;
            }
            case GetAttr attr:
            {
                var target = Evaluate(attr.Target, scope);
                current = attr;
                return Builtins.GetAttribute(target, attr.Name);
            }
            case GetItem item:
            {
                var target = Evaluate(item.Target, scope);
                if (item.Key is SliceExpr slice)
                {
                    var start = slice.Start is null ? null : Evaluate(slice.Start, scope);
                    var stop = slice.Stop is null ? null : Evaluate(slice.Stop, scope);
                    var step = slice.Step is null ? null : Evaluate(slice.Step, scope);
                    current = item;
                    return Builtins.Slice(target, start, stop, step);
                }
                var key = Evaluate(item.Key, scope);
                current = item;
                return Builtins.GetItem(target, key);
            }
            case Unary unary:
            {
                var operand = Evaluate(unary.Operand, scope);
                current = unary;
                return unary.Op switch
                {
                    "not" => !PyOps.IsTruthy(operand),
                    "-" => operand switch
                    {
                        long l => (object)checked(-l),
                        double d => -d,
                        bool b => b ? -1L : 0L,
                        Undefined u => throw u.Error(),
                        _ => throw new JinjaRuntimeError($"bad operand type for unary -: '{PyOps.TypeName(operand)}'"),
                    },
                    _ => PyOps.IsNumber(operand) ? (operand is bool b2 ? (b2 ? 1L : 0L) : operand)
                        : throw new JinjaRuntimeError($"bad operand type for unary +: '{PyOps.TypeName(operand)}'"),
                };
            }
            case Binary binary:
            {
                var left = Evaluate(binary.Left, scope);
                if (binary.Op == "and") return PyOps.IsTruthy(left) ? Evaluate(binary.Right, scope) : left;
                if (binary.Op == "or") return PyOps.IsTruthy(left) ? left : Evaluate(binary.Right, scope);
                var right = Evaluate(binary.Right, scope);
                current = binary;
                return Builtins.BinaryOp(binary.Op, left, right);
            }
            case Compare compare:
            {
                var left = Evaluate(compare.First, scope);
                foreach (var (op, operandExpr) in compare.Rest)
                {
                    var right = Evaluate(operandExpr, scope);
                    current = compare;
                    bool holds = op switch
                    {
                        "==" => PyOps.AreEqual(left, right),
                        "!=" => !PyOps.AreEqual(left, right),
                        "<" => PyOps.Compare(left, right) < 0,
                        ">" => PyOps.Compare(left, right) > 0,
                        "<=" => PyOps.Compare(left, right) <= 0,
                        ">=" => PyOps.Compare(left, right) >= 0,
                        "in" => PyOps.Contains(right, left),
                        _ => !PyOps.Contains(right, left),
                    };
                    if (!holds) return false;
                    left = right;
                }
                return true;
            }
            case Conditional conditional:
                if (PyOps.IsTruthy(Evaluate(conditional.Test, scope))) return Evaluate(conditional.Then, scope);
                return conditional.Else is null ? new Undefined("the inline if has no else") : Evaluate(conditional.Else, scope);
            case CallExpr call:
            {
                var callee = Evaluate(call.Callee, scope);
                var args = EvaluateArguments(call.Args, scope);
                current = call;
                return Invoke(callee, args);
            }
            case FilterExpr filter:
                return ApplyFilter(filter, filter.Operand is null ? null : Evaluate(filter.Operand, scope), scope);
            case TestExpr test:
            {
                var operand = Evaluate(test.Operand, scope);
                var args = EvaluateArguments(test.Args, scope);
                current = test;
                bool result = Builtins.RunTest(this, test.Name, operand, args);
                return test.Negated ? !result : result;
            }
            case SliceExpr:
                throw new JinjaRuntimeError("a slice is only allowed inside []");
            default:
                throw new JinjaRuntimeError($"expression {expression.GetType().Name} is not supported");
        }
    }

    private CallArgs EvaluateArguments(Arguments arguments, Scope scope)
    {
        if (arguments.Positional.Count == 0 && arguments.Named.Count == 0) return new CallArgs([], []);
        var positional = arguments.Positional.Select(a => Evaluate(a, scope)).ToList();
        var named = arguments.Named.Select(n => new KeyValuePair<string, object?>(n.Name, Evaluate(n.Value, scope))).ToList();
        return new CallArgs(positional, named);
    }

    internal object? Invoke(object? callee, CallArgs args) => callee switch
    {
        ICallable callable => callable.Call(this, args),
        Undefined undefined => throw undefined.Error(),
        _ => throw new JinjaRuntimeError($"'{PyOps.TypeName(callee)}' object is not callable"),
    };

    private object? ApplyFilter(FilterExpr filter, object? operand, Scope scope)
    {
        var args = EvaluateArguments(filter.Args, scope);
        current = filter;
        return Builtins.RunFilter(this, filter.Name, operand, args);
    }
}
