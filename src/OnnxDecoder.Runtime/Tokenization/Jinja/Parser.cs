namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Jinja2's grammar (its parser.py precedence: conditional, or, and, not, comparisons, + -, ~, * / // %,
/// **, unary, then postfix . [] () | is) over the lexer's tokens. A tag we do not run is a syntax error
/// naming it.
/// </summary>
internal sealed class Parser
{
    /// <summary>Deepest nesting of blocks and expressions the parser accepts (a hostile template cannot overflow the stack).</summary>
    public const int MaxNestingDepth = 200;

    private static readonly HashSet<string> CompareOps = ["==", "!=", "<", ">", "<=", ">="];

    private readonly List<Token> tokens;
    private readonly string templateName;
    private int index;
    private int depth;
    private int varargsMentions, kwargsMentions;

    private Parser(List<Token> tokens, string templateName)
    {
        this.tokens = tokens;
        this.templateName = templateName;
    }

    public static List<Stmt> Parse(string source, string templateName)
    {
        var parser = new Parser(Lexer.Tokenize(source, templateName), templateName);
        var body = parser.ParseBody([], out _);
        return body;
    }

    private Token Current => tokens[index];

    private Token Peek(int ahead = 1) => tokens[Math.Min(index + ahead, tokens.Count - 1)];

    private Token Next() => tokens[index < tokens.Count - 1 ? index++ : index];

    private TemplateError Error(Token at, string message) => new(templateName, at.Line, at.Column, message);

    private Token Expect(TokenKind kind, string? text, string what)
    {
        var token = Current;
        if (token.Kind != kind || (text is not null && token.Text != text))
            throw Error(token, $"expected {what}, found {token}");
        return Next();
    }

    private string ExpectName(string what) => Expect(TokenKind.Name, null, what).Text;

    private void Enter(Token at)
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        if (++depth > MaxNestingDepth) throw Error(at, $"template nests deeper than MaxNestingDepth ({MaxNestingDepth})");
    }

    // ---- statements ---------------------------------------------------------------------------

    /// <summary>Parses until a block tag whose name is in <paramref name="endTags"/> (or the end); the tag's name is consumed.</summary>
    private List<Stmt> ParseBody(HashSet<string> endTags, out string endTag)
    {
        var body = new List<Stmt>();
        while (true)
        {
            var token = Current;
            switch (token.Kind)
            {
                case TokenKind.End:
                    if (endTags.Count > 0)
                        throw Error(token, $"unexpected end of template: expected {string.Join(" or ", endTags.Select(t => "{% " + t + " %}"))}");
                    endTag = "";
                    return body;
                case TokenKind.Data:
                    Next();
                    body.Add(new TextOut(token.Line, token.Column, token.Text));
                    break;
                case TokenKind.VariableBegin:
                    Next();
                    var value = ParseTuple(withCondition: true);
                    Expect(TokenKind.VariableEnd, null, "'}}'");
                    body.Add(new ExprOut(token.Line, token.Column, value));
                    break;
                case TokenKind.BlockBegin:
                    var name = Peek();
                    if (name.Kind == TokenKind.Name && endTags.Contains(name.Text))
                    {
                        Next();
                        Next();
                        endTag = name.Text;
                        return body;
                    }
                    Next();
                    Enter(token);
                    body.Add(ParseStatement());
                    depth--;
                    break;
                default:
                    throw Error(token, $"unexpected {token}");
            }
        }
    }

    private void EndTag() => Expect(TokenKind.BlockEnd, null, "'%}'");

    private Stmt ParseStatement()
    {
        var token = Current;
        if (token.Kind != TokenKind.Name) throw Error(token, $"expected a tag name, found {token}");
        Next();
        switch (token.Text)
        {
            case "if": return ParseIf(token);
            case "for": return ParseFor(token);
            case "set": return ParseSet(token);
            case "macro": return ParseMacro(token);
            case "call": return ParseCallBlock(token);
            case "filter":
            {
                var filters = ParseFilterChain(null);
                EndTag();
                var body = ParseBody(["endfilter"], out _);
                EndTag();
                return new FilterBlockStmt(token.Line, token.Column, filters, body);
            }
            case "generation":
            {
                EndTag();
                var body = ParseBody(["endgeneration"], out _);
                EndTag();
                return new GenerationStmt(token.Line, token.Column, body);
            }
            case "break":
                EndTag();
                return new BreakStmt(token.Line, token.Column);
            case "continue":
                EndTag();
                return new ContinueStmt(token.Line, token.Column);
            case "elif" or "else" or "endif" or "endfor" or "endset" or "endmacro" or "endcall" or "endfilter" or "endgeneration":
                throw Error(token, $"unexpected {{% {token.Text} %}} with no block open for it");
            default:
                throw Error(token, $"the tag {{% {token.Text} %}} is not supported by this chat-template engine " +
                    "(it runs if, for, set, macro, call, filter, break, continue, raw and generation)");
        }
    }

    private Stmt ParseIf(Token at)
    {
        var branches = new List<(Expr, List<Stmt>)>();
        List<Stmt>? otherwise = null;
        var test = ParseTuple(withCondition: false);
        while (true)
        {
            EndTag();
            var body = ParseBody(["elif", "else", "endif"], out string end);
            branches.Add((test, body));
            if (end == "elif")
            {
                test = ParseTuple(withCondition: false);
                continue;
            }
            if (end == "else")
            {
                EndTag();
                otherwise = ParseBody(["endif"], out _);
            }
            EndTag();
            return new IfStmt(at.Line, at.Column, branches, otherwise);
        }
    }

    private Stmt ParseFor(Token at)
    {
        var target = ParseTarget();
        Expect(TokenKind.Name, "in", "'in'");
        var iterable = ParseTuple(withCondition: false, extraEnd: "recursive");
        Expr? filter = null;
        if (Current.IsName("if"))
        {
            Next();
            filter = ParseExpression(withCondition: true);
        }
        if (Current.IsName("recursive")) throw Error(Current, "recursive for loops are not supported by this chat-template engine");
        EndTag();
        var body = ParseBody(["endfor", "else"], out string end);
        List<Stmt>? otherwise = null;
        if (end == "else")
        {
            EndTag();
            otherwise = ParseBody(["endfor"], out _);
        }
        EndTag();
        return new ForStmt(at.Line, at.Column, target, iterable, filter, body, otherwise);
    }

    private Target ParseTarget()
    {
        var names = new List<string>();
        bool parenthesized = Current.IsOperator("(");
        if (parenthesized) Next();
        names.Add(ExpectName("a variable name"));
        bool isTuple = parenthesized;
        while (Current.IsOperator(","))
        {
            isTuple = true;
            Next();
            if (Current.Kind != TokenKind.Name || Current.Text == "in") break;
            names.Add(ExpectName("a variable name"));
        }
        if (parenthesized) Expect(TokenKind.Operator, ")", "')'");
        return new Target(names, isTuple);
    }

    private Stmt ParseSet(Token at)
    {
        if (Current.Kind == TokenKind.Name && Peek().IsOperator("."))
        {
            string ns = Next().Text;
            Next();
            string attribute = ExpectName("an attribute name");
            Expect(TokenKind.Operator, "=", "'='");
            var value = ParseTuple(withCondition: true);
            EndTag();
            return new SetStmt(at.Line, at.Column, new Target([ns], false), attribute, value);
        }
        var target = ParseTarget();
        if (Current.IsOperator("="))
        {
            Next();
            var value = ParseTuple(withCondition: true);
            EndTag();
            return new SetStmt(at.Line, at.Column, target, null, value);
        }
        if (target.IsTuple) throw Error(Current, "a block {% set %} assigns one name");
        var filters = Current.IsOperator("|") ? ParseFilterChain(null, leadingPipe: true) : [];
        EndTag();
        var body = ParseBody(["endset"], out _);
        EndTag();
        return new SetBlockStmt(at.Line, at.Column, target.Names[0], filters, body);
    }

    private List<MacroParameter> ParseParameters()
    {
        var parameters = new List<MacroParameter>();
        Expect(TokenKind.Operator, "(", "'('");
        while (!Current.IsOperator(")"))
        {
            if (parameters.Count > 0) Expect(TokenKind.Operator, ",", "','");
            if (Current.IsOperator(")")) break;
            string name = ExpectName("a parameter name");
            Expr? fallback = null;
            if (Current.IsOperator("="))
            {
                Next();
                fallback = ParseExpression(withCondition: true);
            }
            else if (parameters.Count > 0 && parameters[^1].Default is not null)
            {
                throw Error(Current, $"parameter '{name}' without a default follows one with a default");
            }
            parameters.Add(new MacroParameter(name, fallback));
        }
        Next();
        return parameters;
    }

    private Stmt ParseMacro(Token at)
    {
        string name = ExpectName("a macro name");
        var parameters = ParseParameters();
        EndTag();
        int varargsBefore = varargsMentions, kwargsBefore = kwargsMentions;
        var body = ParseBody(["endmacro"], out _);
        bool takesVarargs = varargsMentions > varargsBefore, takesKwargs = kwargsMentions > kwargsBefore;
        if (Current.Kind == TokenKind.Name && Current.Text == name) Next();
        EndTag();
        return new MacroStmt(at.Line, at.Column, name, parameters, body, takesVarargs, takesKwargs);
    }

    private Stmt ParseCallBlock(Token at)
    {
        var callerParameters = Current.IsOperator("(") ? ParseParameters() : [];
        var call = ParseExpression(withCondition: true);
        if (call is not CallExpr callExpr) throw Error(at, "{% call %} needs a macro call, such as {% call m(x) %}");
        EndTag();
        var body = ParseBody(["endcall"], out _);
        EndTag();
        return new CallBlockStmt(at.Line, at.Column, callExpr, callerParameters, body);
    }

    // ---- expressions --------------------------------------------------------------------------

    /// <summary>An expression, or several separated by commas (a tuple).</summary>
    private Expr ParseTuple(bool withCondition, string? extraEnd = null)
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

    private Expr ParseExpression(bool withCondition)
    {
        Enter(Current);
        var result = withCondition ? ParseConditional() : ParseOr();
        depth--;
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
            depth--;
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
            depth--;
        }
        else
        {
            node = ParsePrimary();
        }
        node = ParsePostfix(node);
        if (withFilter) node = ParseFilterExpr(node);
        return node;
    }

    private Expr ParsePrimary()
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
                var inner = ParseTuple(withCondition: true);
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
                    items.Add(ParseExpression(withCondition: true));
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
                    var key = ParseExpression(withCondition: true);
                    Expect(TokenKind.Operator, ":", "':'");
                    items.Add((key, ParseExpression(withCondition: true)));
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
        if (token.Text == "varargs") varargsMentions++;
        if (token.Text == "kwargs") kwargsMentions++;
        return new NameRef(token.Line, token.Column, token.Text);
    }

    private Expr ParsePostfix(Expr node)
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
            start = ParseExpression(withCondition: true);
            if (!Current.IsOperator(":")) return start;
        }
        Next();
        if (!Current.IsOperator("]") && !Current.IsOperator(",") && !Current.IsOperator(":")) stop = ParseExpression(withCondition: true);
        if (Current.IsOperator(":"))
        {
            Next();
            if (!Current.IsOperator("]") && !Current.IsOperator(",")) step = ParseExpression(withCondition: true);
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
                named.Add((name, ParseExpression(withCondition: true)));
            }
            else
            {
                if (named.Count > 0) throw Error(Current, "a positional argument follows a keyword argument");
                positional.Add(ParseExpression(withCondition: true));
            }
        }
        Next();
        return new Arguments(positional, named);
    }

    private Expr ParseFilterExpr(Expr node)
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
    private List<FilterExpr> ParseFilterChain(Expr? operand, bool leadingPipe = false)
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
