namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Evaluates Jinja2 expressions to the values of <see cref="PyOps"/>: names, literals, attribute and item access,
/// operators, calls, filters and tests. It marks each construct it runs on its <see cref="Interpreter"/>, so that
/// an error names where it happened.
/// </summary>
internal sealed class ExpressionEvaluator(Interpreter interpreter)
{
    public object? Evaluate(Expr expression, Scope scope)
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
                interpreter.Current = attr;
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
                    interpreter.Current = item;
                    return Builtins.Slice(target, start, stop, step);
                }
                var key = Evaluate(item.Key, scope);
                interpreter.Current = item;
                return Builtins.GetItem(target, key);
            }
            case Unary unary:
            {
                var operand = Evaluate(unary.Operand, scope);
                interpreter.Current = unary;
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
                interpreter.Current = binary;
                return Builtins.BinaryOp(binary.Op, left, right);
            }
            case Compare compare:
            {
                var left = Evaluate(compare.First, scope);
                foreach (var (op, operandExpr) in compare.Rest)
                {
                    var right = Evaluate(operandExpr, scope);
                    interpreter.Current = compare;
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
                interpreter.Current = call;
                return interpreter.Invoke(callee, args);
            }
            case FilterExpr filter:
                return ApplyFilter(filter, filter.Operand is null ? null : Evaluate(filter.Operand, scope), scope);
            case TestExpr test:
            {
                var operand = Evaluate(test.Operand, scope);
                var args = EvaluateArguments(test.Args, scope);
                interpreter.Current = test;
                bool result = JinjaTests.Run(interpreter, test.Name, operand, args);
                return test.Negated ? !result : result;
            }
            case SliceExpr:
                throw new JinjaRuntimeError("a slice is only allowed inside []");
            default:
                throw new JinjaRuntimeError($"expression {expression.GetType().Name} is not supported");
        }
    }

    public CallArgs EvaluateArguments(Arguments arguments, Scope scope)
    {
        if (arguments.Positional.Count == 0 && arguments.Named.Count == 0) return new CallArgs([], []);
        var positional = arguments.Positional.Select(a => Evaluate(a, scope)).ToList();
        var named = arguments.Named.Select(n => new KeyValuePair<string, object?>(n.Name, Evaluate(n.Value, scope))).ToList();
        return new CallArgs(positional, named);
    }

    public object? ApplyFilter(FilterExpr filter, object? operand, Scope scope)
    {
        var args = EvaluateArguments(filter.Args, scope);
        interpreter.Current = filter;
        return JinjaFilters.RunFilter(interpreter, filter.Name, operand, args);
    }
}
