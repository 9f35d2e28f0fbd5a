namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Jinja2's operands (names, literals, (), [], {}) and what may follow one: attribute and item access, slices,
/// calls, filters (|) and tests (is). Nested expressions go back to <see cref="ExpressionParser"/>.
/// </summary>
internal sealed class PostfixParser(TokenCursor cursor, ExpressionParser expressions) : CursorParser(cursor)
{
    public Expr ParsePrimary()
    {
        var token = Current;
        switch (token.Kind)
        {
            case TokenKind.Name:
                Next();
                return token.Text switch
                {
                    "true" or "True" => new Literal(token.Line, token.Column, true),
                    "false" or "False" => new Literal(token.Line, token.Column, false),
                    "none" or "None" => new Literal(token.Line, token.Column, null),
                    _ => Name(token),
                };
            case TokenKind.String:
            {
                Next();
                string text = (string)token.Value!;
                while (Current.Kind == TokenKind.String) text += (string)Next().Value!;
                return new Literal(token.Line, token.Column, text);
            }
            case TokenKind.Integer or TokenKind.Float:
                Next();
                return new Literal(token.Line, token.Column, token.Value);
            case TokenKind.Operator when token.Text == "(":
            {
                Next();
                if (Current.IsOperator(")"))
                {
                    Next();
                    return new TupleExpr(token.Line, token.Column, []);
                }
                var inner = expressions.ParseTuple(withCondition: true);
                Expect(TokenKind.Operator, ")", "')'");
                return inner;
            }
            case TokenKind.Operator when token.Text == "[":
            {
                Next();
                var items = new List<Expr>();
                while (!Current.IsOperator("]"))
                {
                    if (items.Count > 0) Expect(TokenKind.Operator, ",", "',' or ']'");
                    if (Current.IsOperator("]")) break;
                    items.Add(expressions.ParseExpression(withCondition: true));
                }
                Next();
                return new ListExpr(token.Line, token.Column, items);
            }
            case TokenKind.Operator when token.Text == "{":
            {
                Next();
                var items = new List<(Expr, Expr)>();
                while (!Current.IsOperator("}"))
                {
                    if (items.Count > 0) Expect(TokenKind.Operator, ",", "',' or '}'");
                    if (Current.IsOperator("}")) break;
                    var key = expressions.ParseExpression(withCondition: true);
                    Expect(TokenKind.Operator, ":", "':'");
                    items.Add((key, expressions.ParseExpression(withCondition: true)));
                }
                Next();
                return new DictExpr(token.Line, token.Column, items);
            }
            default:
                throw Error(token, $"expected an expression, found {token}");
        }
    }

    private NameRef Name(Token token)
    {
        if (token.Text == "varargs") Cursor.VarargsMentions++;
        if (token.Text == "kwargs") Cursor.KwargsMentions++;
        return new NameRef(token.Line, token.Column, token.Text);
    }

    public Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            var token = Current;
            if (token.IsOperator("."))
            {
                Next();
                var name = Next();
                if (name.Kind == TokenKind.Name) node = new GetAttr(token.Line, token.Column, node, name.Text);
                else if (name.Kind == TokenKind.Integer) node = new GetItem(token.Line, token.Column, node, new Literal(name.Line, name.Column, name.Value));
                else throw Error(name, $"expected an attribute name after '.', found {name}");
            }
            else if (token.IsOperator("["))
            {
                Next();
                var keys = new List<Expr>();
                while (!Current.IsOperator("]"))
                {
                    if (keys.Count > 0) Expect(TokenKind.Operator, ",", "',' or ']'");
                    keys.Add(ParseSubscript());
                }
                Next();
                if (keys.Count == 0) throw Error(token, "expected a subscript inside []");
                var key = keys.Count == 1 ? keys[0] : new TupleExpr(token.Line, token.Column, keys);
                node = new GetItem(token.Line, token.Column, node, key);
            }
            else if (token.IsOperator("("))
            {
                node = new CallExpr(node.Line, node.Column, node, ParseCallArguments());
            }
            else return node;
        }
    }

    private Expr ParseSubscript()
    {
        var at = Current;
        Expr? start = null, stop = null, step = null;
        if (!at.IsOperator(":"))
        {
            start = expressions.ParseExpression(withCondition: true);
            if (!Current.IsOperator(":")) return start;
        }
        Next();
        if (!Current.IsOperator("]") && !Current.IsOperator(",") && !Current.IsOperator(":")) stop = expressions.ParseExpression(withCondition: true);
        if (Current.IsOperator(":"))
        {
            Next();
            if (!Current.IsOperator("]") && !Current.IsOperator(",")) step = expressions.ParseExpression(withCondition: true);
        }
        return new SliceExpr(at.Line, at.Column, start, stop, step);
    }

    private Arguments ParseCallArguments()
    {
        Expect(TokenKind.Operator, "(", "'('");
        var positional = new List<Expr>();
        var named = new List<(string, Expr)>();
        while (!Current.IsOperator(")"))
        {
            if (positional.Count + named.Count > 0) Expect(TokenKind.Operator, ",", "',' or ')'");
            if (Current.IsOperator(")")) break;
            if (Current.IsOperator("*") || Current.IsOperator("**"))
                throw Error(Current, "*args and **kwargs in calls are not supported by this chat-template engine");
            if (Current.Kind == TokenKind.Name && Peek().IsOperator("="))
            {
                string name = Next().Text;
                Next();
                named.Add((name, expressions.ParseExpression(withCondition: true)));
            }
            else
            {
                if (named.Count > 0) throw Error(Current, "a positional argument follows a keyword argument");
                positional.Add(expressions.ParseExpression(withCondition: true));
            }
        }
        Next();
        return new Arguments(positional, named);
    }

    public Expr ParseFilterExpr(Expr node)
    {
        while (true)
        {
            if (Current.IsOperator("|"))
            {
                foreach (var filter in ParseFilterChain(node, leadingPipe: true)) node = filter;
                continue;
            }
            if (Current.IsName("is"))
            {
                node = ParseTest(node);
                continue;
            }
            if (Current.IsOperator("("))
            {
                node = new CallExpr(node.Line, node.Column, node, ParseCallArguments());
                continue;
            }
            return node;
        }
    }

    /// <summary>name(args)|name2 ...; each filter takes the previous one as its operand (the first takes <paramref name="operand"/>).</summary>
    public List<FilterExpr> ParseFilterChain(Expr? operand, bool leadingPipe = false)
    {
        var chain = new List<FilterExpr>();
        bool first = true;
        while (true)
        {
            if (!first || leadingPipe)
            {
                if (!Current.IsOperator("|")) break;
                Next();
            }
            first = false;
            var at = Current;
            string name = ExpectName("a filter name");
            while (Current.IsOperator(".") && Peek().Kind == TokenKind.Name)
            {
                Next();
                name += "." + Next().Text;
            }
            var args = Current.IsOperator("(") ? ParseCallArguments() : Arguments.None;
            var filter = new FilterExpr(at.Line, at.Column, chain.Count > 0 ? chain[^1] : operand, name, args);
            chain.Add(filter);
            if (!Current.IsOperator("|")) break;
        }
        return chain;
    }

    private Expr ParseTest(Expr operand)
    {
        var at = Next();
        bool negated = false;
        if (Current.IsName("not"))
        {
            Next();
            negated = true;
        }
        var nameToken = Current;
        string name;
        if (nameToken.Kind == TokenKind.Name) name = Next().Text;
        else if (nameToken.Kind == TokenKind.Operator && nameToken.Text is "==" or "!=" or "<" or ">" or "<=" or ">=") name = Next().Text;
        else throw Error(nameToken, $"expected a test name after 'is', found {nameToken}");
        Arguments args = Arguments.None;
        if (Current.IsOperator("("))
        {
            args = ParseCallArguments();
        }
        else if (Current.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
                 || (Current.Kind == TokenKind.Name && Current.Text is not ("else" or "or" or "and" or "if" or "in" or "not" or "is" or "recursive"))
                 || Current.IsOperator("[") || Current.IsOperator("{"))
        {
            var single = ParsePostfix(ParsePrimary());
            args = new Arguments([single], []);
        }
        return new TestExpr(at.Line, at.Column, operand, name, args, negated);
    }
}
