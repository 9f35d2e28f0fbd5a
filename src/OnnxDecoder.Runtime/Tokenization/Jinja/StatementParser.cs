namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// Jinja2's statements (if, for, set, macro, call, filter, generation, break, continue) over the lexer's tokens;
/// the expressions inside tags and {{ }} go to <see cref="ExpressionParser"/>. A tag we do not run is a syntax error
/// naming it.
/// </summary>
internal sealed class StatementParser : CursorParser
{
    private readonly ExpressionParser expressions;

    private StatementParser(TokenCursor cursor) : base(cursor) => expressions = new ExpressionParser(cursor);

    public static List<Stmt> Parse(string source, string templateName)
    {
        var parser = new StatementParser(new TokenCursor(Lexer.Tokenize(source, templateName), templateName));
        var body = parser.ParseBody([], out _);
        return body;
    }

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
                    var value = expressions.ParseTuple(withCondition: true);
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
                    Leave();
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
                var filters = expressions.ParseFilterChain(null);
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
        var test = expressions.ParseTuple(withCondition: false);
        while (true)
        {
            EndTag();
            var body = ParseBody(["elif", "else", "endif"], out string end);
            branches.Add((test, body));
            if (end == "elif")
            {
                test = expressions.ParseTuple(withCondition: false);
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
        var iterable = expressions.ParseTuple(withCondition: false, extraEnd: "recursive");
        Expr? filter = null;
        if (Current.IsName("if"))
        {
            Next();
            filter = expressions.ParseExpression(withCondition: true);
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
            var value = expressions.ParseTuple(withCondition: true);
            EndTag();
            return new SetStmt(at.Line, at.Column, new Target([ns], false), attribute, value);
        }
        var target = ParseTarget();
        if (Current.IsOperator("="))
        {
            Next();
            var value = expressions.ParseTuple(withCondition: true);
            EndTag();
            return new SetStmt(at.Line, at.Column, target, null, value);
        }
        if (target.IsTuple) throw Error(Current, "a block {% set %} assigns one name");
        var filters = Current.IsOperator("|") ? expressions.ParseFilterChain(null, leadingPipe: true) : [];
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
                fallback = expressions.ParseExpression(withCondition: true);
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
        int varargsBefore = Cursor.VarargsMentions, kwargsBefore = Cursor.KwargsMentions;
        var body = ParseBody(["endmacro"], out _);
        bool takesVarargs = Cursor.VarargsMentions > varargsBefore, takesKwargs = Cursor.KwargsMentions > kwargsBefore;
        if (Current.Kind == TokenKind.Name && Current.Text == name) Next();
        EndTag();
        return new MacroStmt(at.Line, at.Column, name, parameters, body, takesVarargs, takesKwargs);
    }

    private Stmt ParseCallBlock(Token at)
    {
        var callerParameters = Current.IsOperator("(") ? ParseParameters() : [];
        var call = expressions.ParseExpression(withCondition: true);
        if (call is not CallExpr callExpr) throw Error(at, "{% call %} needs a macro call, such as {% call m(x) %}");
        EndTag();
        var body = ParseBody(["endcall"], out _);
        EndTag();
        return new CallBlockStmt(at.Line, at.Column, callExpr, callerParameters, body);
    }
}
