namespace OnnxDecoder.Runtime.Tokenization.Jinja;

// The syntax tree of a template. Every node keeps the line and column of the token it starts at, so a
// runtime error can name them.

internal abstract record Node(int Line, int Column);

// ---- expressions --------------------------------------------------------------------------------

internal abstract record Expr(int Line, int Column) : Node(Line, Column);

internal sealed record Literal(int Line, int Column, object? Value) : Expr(Line, Column);

internal sealed record NameRef(int Line, int Column, string Name) : Expr(Line, Column);

internal sealed record ListExpr(int Line, int Column, List<Expr> Items) : Expr(Line, Column);

internal sealed record TupleExpr(int Line, int Column, List<Expr> Items) : Expr(Line, Column);

internal sealed record DictExpr(int Line, int Column, List<(Expr Key, Expr Value)> Items) : Expr(Line, Column);

/// <summary>obj.name: attribute first, then item (Jinja's getattr).</summary>
internal sealed record GetAttr(int Line, int Column, Expr Target, string Name) : Expr(Line, Column);

/// <summary>obj[key]: item first, then attribute (Jinja's getitem).</summary>
internal sealed record GetItem(int Line, int Column, Expr Target, Expr Key) : Expr(Line, Column);

internal sealed record SliceExpr(int Line, int Column, Expr? Start, Expr? Stop, Expr? Step) : Expr(Line, Column);

internal sealed record Unary(int Line, int Column, string Op, Expr Operand) : Expr(Line, Column);

internal sealed record Binary(int Line, int Column, string Op, Expr Left, Expr Right) : Expr(Line, Column);

/// <summary>a &lt; b &lt;= c: each comparison with the next operand, all must hold.</summary>
internal sealed record Compare(int Line, int Column, Expr First, List<(string Op, Expr Operand)> Rest) : Expr(Line, Column);

internal sealed record Conditional(int Line, int Column, Expr Test, Expr Then, Expr? Else) : Expr(Line, Column);

internal sealed record Arguments(List<Expr> Positional, List<(string Name, Expr Value)> Named)
{
    public static readonly Arguments None = new([], []);
}

internal sealed record CallExpr(int Line, int Column, Expr Callee, Arguments Args) : Expr(Line, Column);

internal sealed record FilterExpr(int Line, int Column, Expr? Operand, string Name, Arguments Args) : Expr(Line, Column);

internal sealed record TestExpr(int Line, int Column, Expr Operand, string Name, Arguments Args, bool Negated) : Expr(Line, Column);

// ---- statements ---------------------------------------------------------------------------------

internal abstract record Stmt(int Line, int Column) : Node(Line, Column);

internal sealed record TextOut(int Line, int Column, string Text) : Stmt(Line, Column);

internal sealed record ExprOut(int Line, int Column, Expr Value) : Stmt(Line, Column);

internal sealed record IfStmt(int Line, int Column, List<(Expr Test, List<Stmt> Body)> Branches, List<Stmt>? Else) : Stmt(Line, Column);

/// <summary>A for target: one name, or names to unpack each item into.</summary>
internal sealed record Target(List<string> Names, bool IsTuple);

internal sealed record ForStmt(int Line, int Column, Target Target, Expr Iterable, Expr? Filter, List<Stmt> Body, List<Stmt>? Else)
    : Stmt(Line, Column);

/// <summary>{% set a = x %}, {% set a, b = x %}, or {% set ns.attr = x %} (Attribute non-null).</summary>
internal sealed record SetStmt(int Line, int Column, Target Target, string? Attribute, Expr Value) : Stmt(Line, Column);

/// <summary>{% set name %}...{% endset %}, optionally through filters.</summary>
internal sealed record SetBlockStmt(int Line, int Column, string Name, List<FilterExpr> Filters, List<Stmt> Body) : Stmt(Line, Column);

internal sealed record MacroParameter(string Name, Expr? Default);

/// <summary>A macro accepts extra positional / keyword arguments only when its body reads varargs / kwargs, as in Jinja2.</summary>
internal sealed record MacroStmt(int Line, int Column, string Name, List<MacroParameter> Parameters, List<Stmt> Body, bool TakesVarargs, bool TakesKwargs)
    : Stmt(Line, Column);

/// <summary>{% call macro(...) %}body{% endcall %}: the body is the macro's caller().</summary>
internal sealed record CallBlockStmt(int Line, int Column, CallExpr Call, List<MacroParameter> CallerParameters, List<Stmt> Body)
    : Stmt(Line, Column);

internal sealed record FilterBlockStmt(int Line, int Column, List<FilterExpr> Filters, List<Stmt> Body) : Stmt(Line, Column);

/// <summary>transformers' {% generation %} marks assistant text for masks; it renders its body unchanged.</summary>
internal sealed record GenerationStmt(int Line, int Column, List<Stmt> Body) : Stmt(Line, Column);

internal sealed record BreakStmt(int Line, int Column) : Stmt(Line, Column);

internal sealed record ContinueStmt(int Line, int Column) : Stmt(Line, Column);
