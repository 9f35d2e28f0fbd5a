namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// The lexer's tokens with a read position and the nesting depth, shared by the statement and expression parsers
/// (they advance one position together). It also counts mentions of varargs and kwargs, which decide whether a
/// macro takes extra arguments.
/// </summary>
internal sealed class TokenCursor
{
    /// <summary>Deepest nesting of blocks and expressions the parser accepts (a hostile template cannot overflow the stack).</summary>
    public const int MaxNestingDepth = 200;

    private readonly List<Token> tokens;
    private readonly string templateName;
    private int index;
    private int depth;

    public TokenCursor(List<Token> tokens, string templateName)
    {
        this.tokens = tokens;
        this.templateName = templateName;
    }

    public int VarargsMentions { get; set; }

    public int KwargsMentions { get; set; }

    public Token Current => tokens[index];

    public Token Peek(int ahead = 1) => tokens[Math.Min(index + ahead, tokens.Count - 1)];

    public Token Next() => tokens[index < tokens.Count - 1 ? index++ : index];

    public TemplateError Error(Token at, string message) => new(templateName, at.Line, at.Column, message);

    public Token Expect(TokenKind kind, string? text, string what)
    {
        var token = Current;
        if (token.Kind != kind || (text is not null && token.Text != text))
            throw Error(token, $"expected {what}, found {token}");
        return Next();
    }

    public string ExpectName(string what) => Expect(TokenKind.Name, null, what).Text;

    /// <summary>One level deeper; every Enter is paired with a <see cref="Leave"/>.</summary>
    public void Enter(Token at)
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        if (++depth > MaxNestingDepth) throw Error(at, $"template nests deeper than MaxNestingDepth ({MaxNestingDepth})");
    }

    public void Leave() => depth--;
}
