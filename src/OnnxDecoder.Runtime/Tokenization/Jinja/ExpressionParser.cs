namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Jinja2's expression precedence (its parser.py: conditional, or, and, not, comparisons, + -, ~, * / // %, **,
/// unary); the operands and what follows them (. [] () | is) go to <see cref="PostfixParser"/>.
/// </summary>
internal sealed class ExpressionParser : CursorParser
{
    private static readonly HashSet<string> CompareOps = ["==", "!=", "<", ">", "<=", ">="];

    private readonly PostfixParser postfix;

    public ExpressionParser(TokenCursor cursor) : base(cursor) => postfix = new PostfixParser(cursor, this);

    /// <summary>An expression, or several separated by commas (a tuple).</summary>
    public Expr ParseTuple(bool withCondition, string? extraEnd = null)
    {
        var start = Current;
        var items = new List<Expr>();
        bool sawComma = false;
        while (true)
        {
            if (items.Count > 0)
            {
                if (!Current.IsOperator(",")) break;
                Next();
                sawComma = true;
            }
            if (IsTupleEnd(extraEnd)) break;
            items.Add(ParseExpression(withCondition));
        }
        if (!sawComma && items.Count == 1) return items[0];
        if (items.Count == 0 && !sawComma) throw Error(start, $"expected an expression, found {start}");
        return new TupleExpr(start.Line, start.Column, items);
    }

    private bool IsTupleEnd(string? extraEnd) =>
        Current.Kind is TokenKind.VariableEnd or TokenKind.BlockEnd or TokenKind.End
        || Current.IsOperator(")") || Current.IsOperator("]") || Current.IsOperator("}")
        || (extraEnd is not null && Current.IsName(extraEnd)) || Current.IsName("if") && extraEnd == "recursive";

    public Expr ParseExpression(bool withCondition)
    {
        Enter(Current);
        var result = withCondition ? ParseConditional() : ParseOr();
        Leave();
        return result;
    }

    private Expr ParseConditional()
    {
        var value = ParseOr();
        while (Current.IsName("if"))
        {
            var at = Next();
            var test = ParseOr();
            Expr? otherwise = null;
            if (Current.IsName("else"))
            {
                Next();
                otherwise = ParseConditional();
            }
            value = new Conditional(at.Line, at.Column, test, value, otherwise);
        }
        return value;
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Current.IsName("or"))
        {
            var at = Next();
            left = new Binary(at.Line, at.Column, "or", left, ParseAnd());
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Current.IsName("and"))
        {
            var at = Next();
            left = new Binary(at.Line, at.Column, "and", left, ParseNot());
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (Current.IsName("not"))
        {
            var at = Next();
            Enter(at);
            var operand = ParseNot();
            Leave();
            return new Unary(at.Line, at.Column, "not", operand);
        }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && CompareOps.Contains(Current.Text))
            {
                string op = Next().Text;
                rest.Add((op, ParseMath1()));
            }
            else if (Current.IsName("in"))
            {
                Next();
                rest.Add(("in", ParseMath1()));
            }
            else if (Current.IsName("not") && Peek().IsName("in"))
            {
                Next();
                Next();
                rest.Add(("notin", ParseMath1()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new Compare(first.Line, first.Column, first, rest);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        while (Current.IsOperator("+") || Current.IsOperator("-"))
        {
            var at = Next();
            left = new Binary(at.Line, at.Column, at.Text, left, ParseConcat());
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMath2();
        while (Current.IsOperator("~"))
        {
            var at = Next();
            left = new Binary(at.Line, at.Column, "~", left, ParseMath2());
        }
        return left;
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        while (Current.IsOperator("*") || Current.IsOperator("/") || Current.IsOperator("//") || Current.IsOperator("%"))
        {
            var at = Next();
            left = new Binary(at.Line, at.Column, at.Text, left, ParsePow());
        }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary(withFilter: true);
        while (Current.IsOperator("**"))
        {
            var at = Next();
            left = new Binary(at.Line, at.Column, "**", left, ParseUnary(withFilter: true));
        }
        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Expr node;
        if (Current.IsOperator("-") || Current.IsOperator("+"))
        {
            var at = Next();
            Enter(at);
            node = new Unary(at.Line, at.Column, at.Text, ParseUnary(withFilter: false));
            Leave();
        }
        else
        {
            node = postfix.ParsePrimary();
        }
        node = postfix.ParsePostfix(node);
        if (withFilter) node = postfix.ParseFilterExpr(node);
        return node;
    }

    /// <summary>
    /// name(args)|name2 ...; each filter takes the previous one as its operand (the first takes <paramref name="operand"/>).
    /// </summary>
    public List<FilterExpr> ParseFilterChain(Expr? operand, bool leadingPipe = false) => postfix.ParseFilterChain(operand, leadingPipe);
}
