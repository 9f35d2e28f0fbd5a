using System.Text;

namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Renders a parsed template. Sandboxed: values are only the data types of <see cref="PyOps"/>, nothing reaches
/// .NET objects, files or the clock except through the <c>strftime_now</c> the caller supplies; loops,
/// output and macro recursion are bounded by the constants below.
/// </summary>
internal sealed class Interpreter
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
    private readonly ExpressionEvaluator evaluator;

    public Interpreter(string templateName, Func<DateTime> clock)
    {
        this.templateName = templateName;
        this.clock = clock;
        evaluator = new ExpressionEvaluator(this);
    }

    /// <summary>The construct being run, named in errors.</summary>
    internal Node? Current
    {
        get => current;
        set => current = value;
    }

    public string Render(List<Stmt> body, IEnumerable<KeyValuePair<string, object?>> variables)
    {
        var globals = new Scope(null);
        foreach (var (name, value) in TemplateGlobals.All(clock)) globals.Set(name, value);
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
                Emit(output, PyOps.Str(evaluator.Evaluate(value.Value, scope)));
                return Flow.Normal;
            case IfStmt branch:
                foreach (var (test, body) in branch.Branches)
                {
                    if (PyOps.IsTruthy(evaluator.Evaluate(test, scope))) return Execute(body, scope, output);
                }
                return branch.Else is null ? Flow.Normal : Execute(branch.Else, scope, output);
            case ForStmt loop:
                return ExecuteFor(loop, scope, output);
            case SetStmt set:
            {
                var value = evaluator.Evaluate(set.Value, scope);
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
                scope.Set(block.Name, RenderFiltered(block, block.Body, block.Filters, scope));
                return Flow.Normal;
            case MacroStmt macro:
                scope.Set(macro.Name, new Macro(macro.Name, macro.Parameters, macro.Body, scope, macro.TakesVarargs, macro.TakesKwargs));
                return Flow.Normal;
            case CallBlockStmt call:
            {
                var caller = new Macro("caller", call.CallerParameters, call.Body, scope, false, false);
                var callee = evaluator.Evaluate(call.Call.Callee, scope);
                var args = evaluator.EvaluateArguments(call.Call.Args, scope);
                args.Named.Add(new("caller", caller));
                current = call;
                Emit(output, PyOps.Str(Invoke(callee, args)));
                return Flow.Normal;
            }
            case FilterBlockStmt block:
                Emit(output, PyOps.Str(RenderFiltered(block, block.Body, block.Filters, scope)));
                return Flow.Normal;
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

    /// <summary>A block's body rendered to text, then passed through its filters ({% set x | f %}, {% filter f %}).</summary>
    private object? RenderFiltered(Stmt block, List<Stmt> body, List<FilterExpr> filters, Scope scope)
    {
        var captured = new StringBuilder();
        Execute(body, scope, captured);
        current = block;   // errors in the filters name the block, not the body's last statement
        object? value = captured.ToString();
        foreach (var filter in filters) value = evaluator.ApplyFilter(filter, value, scope);
        return value;
    }

    private Flow ExecuteFor(ForStmt loop, Scope scope, StringBuilder output)
    {
        var source = evaluator.Evaluate(loop.Iterable, scope);
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
                if (PyOps.IsTruthy(evaluator.Evaluate(loop.Filter, probe))) kept.Add(item);
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
                    ? evaluator.Evaluate(fallback, scope)
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

    internal object? Invoke(object? callee, CallArgs args) => callee switch
    {
        ICallable callable => callable.Call(this, args),
        Undefined undefined => throw undefined.Error(),
        _ => throw new JinjaRuntimeError($"'{PyOps.TypeName(callee)}' object is not callable"),
    };
}
