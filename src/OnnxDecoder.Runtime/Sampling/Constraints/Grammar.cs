namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>A set of byte values (256 bits).</summary>
public readonly record struct ByteSet(ulong W0, ulong W1, ulong W2, ulong W3)
{
    public static readonly ByteSet Empty = default;
    public static readonly ByteSet All = new(ulong.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue);

    public bool Contains(byte b) => ((Word(b >> 6) >> (b & 63)) & 1) != 0;
    public bool IsEmpty => (W0 | W1 | W2 | W3) == 0;

    private ulong Word(int index) => index switch { 0 => W0, 1 => W1, 2 => W2, _ => W3 };

    public static ByteSet Of(params ReadOnlySpan<byte> bytes)
    {
        var set = Empty;
        foreach (var b in bytes) set = set.Union(Range(b, b));
        return set;
    }

    public static ByteSet Range(int low, int high)
    {
        ulong[] words = new ulong[4];
        for (int b = low; b <= high; b++) words[b >> 6] |= 1UL << (b & 63);
        return new(words[0], words[1], words[2], words[3]);
    }

    public ByteSet Union(ByteSet other) => new(W0 | other.W0, W1 | other.W1, W2 | other.W2, W3 | other.W3);
    public ByteSet Intersect(ByteSet other) => new(W0 & other.W0, W1 & other.W1, W2 & other.W2, W3 & other.W3);
    public ByteSet Minus(ByteSet other) => new(W0 & ~other.W0, W1 & ~other.W1, W2 & ~other.W2, W3 & ~other.W3);
}

/// <summary>
/// A grammar over bytes as an expression tree: byte classes, sequences, choices, bounded or
/// unbounded repeats, calls of named rules (for recursion), and the members of a JSON object
/// (each optional member may be left out, commas only between the ones present).
/// </summary>
public abstract record GrammarNode
{
    public static GrammarNode Bytes(ByteSet set) => new ByteNode(set);
    public static GrammarNode Literal(string text) => Literal(System.Text.Encoding.UTF8.GetBytes(text));
    public static GrammarNode Literal(ReadOnlySpan<byte> bytes)
    {
        var items = new GrammarNode[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) items[i] = new ByteNode(ByteSet.Of(bytes[i]));
        return items.Length == 1 ? items[0] : new SeqNode(items);
    }
    public static GrammarNode Seq(params GrammarNode[] items) => items.Length == 1 ? items[0] : new SeqNode(items);
    public static GrammarNode Alt(params GrammarNode[] choices) => choices.Length == 1 ? choices[0] : new AltNode(choices);
    public static GrammarNode Optional(GrammarNode item) => new RepeatNode(item, 0, 1);
    public static GrammarNode Repeat(GrammarNode item, int min, int max) => new RepeatNode(item, min, max);
    public static readonly GrammarNode Empty = new SeqNode([]);
}

public sealed record ByteNode(ByteSet Set) : GrammarNode;
public sealed record SeqNode(GrammarNode[] Items) : GrammarNode;
/// <summary>One of the choices; no choices matches nothing.</summary>
public sealed record AltNode(GrammarNode[] Choices) : GrammarNode;
/// <summary><paramref name="Item"/> repeated Min..Max times (Max -1: unbounded).</summary>
public sealed record RepeatNode(GrammarNode Item, int Min, int Max) : GrammarNode;
/// <summary>A call of rule <paramref name="Rule"/> of the grammar.</summary>
public sealed record RuleNode(int Rule) : GrammarNode;
/// <summary>A finite automaton given by its transitions: states 0..Edges.Length-1, <paramref name="Start"/> first; a
/// sentence is any byte path from it to an <paramref name="Accepting"/> state (built by <see cref="TextExcluding"/>, whose
/// products no expression tree states compactly).</summary>
public sealed record AutomatonNode(int Start, (ByteSet Set, int Target)[][] Edges, bool[] Accepting) : GrammarNode;
/// <summary>Object members in a fixed order, <paramref name="Separator"/> (a comma with its
/// whitespace) between those present; a member that is not required may be left out. Between
/// <paramref name="MinPresent"/> and <paramref name="MaxPresent"/> (-1: all) members are present.</summary>
public sealed record MembersNode(GrammarNode[] Members, bool[] Required, GrammarNode Separator, int MinPresent = 0, int MaxPresent = -1) : GrammarNode;

/// <summary>A grammar: rule 0 is the whole output; other rules serve recursion (JSON nesting, $ref cycles).</summary>
public sealed class Grammar
{
    private readonly List<GrammarNode?> _rules = [null];

    /// <summary>A short description for errors and benchmarks (e.g. "json-schema schema.json").</summary>
    public string Description { get; init; } = "grammar";

    public IReadOnlyList<GrammarNode?> Rules => _rules;

    public int NewRule()
    {
        _rules.Add(null);
        return _rules.Count - 1;
    }

    public void Define(int rule, GrammarNode body) => _rules[rule] = body;

    public Grammar WithRoot(GrammarNode root)
    {
        _rules[0] = root;
        return this;
    }
}

/// <summary>A grammar, schema or pattern the constraint cannot serve; the message names the construct and where it is.</summary>
public sealed class GrammarException(string message) : Exception(message);
