namespace OnnxDecoder.Runtime.Tokenization.Jinja;

/// <summary>
/// What the statement, expression and postfix parsers read of the <see cref="TokenCursor"/> they advance together:
/// its tokens, its errors (naming the template, line and column) and its nesting depth.
/// </summary>
internal abstract class CursorParser(TokenCursor cursor)
{
    protected TokenCursor Cursor { get; } = cursor;

    protected Token Current => Cursor.Current;

    protected Token Peek(int ahead = 1) => Cursor.Peek(ahead);

    protected Token Next() => Cursor.Next();

    protected TemplateError Error(Token at, string message) => Cursor.Error(at, message);

    protected Token Expect(TokenKind kind, string? text, string what) => Cursor.Expect(kind, text, what);

    protected string ExpectName(string what) => Cursor.ExpectName(what);

    /// <summary>One level deeper; every Enter is paired with a <see cref="Leave"/>.</summary>
    protected void Enter(Token at) => Cursor.Enter(at);

    protected void Leave() => Cursor.Leave();
}
