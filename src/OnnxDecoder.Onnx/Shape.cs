namespace OnnxDecoder.Onnx;

/// <summary>One dimension of a value's shape: a fixed size or a symbolic name such as "batch_size".</summary>
public readonly record struct Dim
{
    public long? Size { get; }
    public string? Symbol { get; }

    private Dim(long? size, string? symbol) { Size = size; Symbol = symbol; }

    public static Dim Of(long size) => size >= 0 ? new(size, null) : throw new ArgumentOutOfRangeException(nameof(size), size, "a dimension cannot be negative");
    public static Dim Named(string symbol) => string.IsNullOrEmpty(symbol) ? throw new ArgumentException("a symbolic dimension needs a name", nameof(symbol)) : new(null, symbol);

    public static implicit operator Dim(long size) => Of(size);
    public static implicit operator Dim(string symbol) => Named(symbol);

    public bool IsFixed => Size.HasValue;
    public override string ToString() => Symbol ?? Size!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>A tensor value in a graph: its name and, where known, its element type and shape.</summary>
/// <remarks>The builder may rename a value (for example to a graph output's contract name) until the
/// graph is built; nodes refer to the value object, so every use follows the rename.</remarks>
public sealed class Value
{
    internal Value(string name, ElementType? elementType, IReadOnlyList<Dim>? shape, ValueKind kind)
    {
        Name = name;
        ElementType = elementType;
        Shape = shape;
        Kind = kind;
    }

    public string Name { get; internal set; }
    public ElementType? ElementType { get; internal set; }
    public IReadOnlyList<Dim>? Shape { get; internal set; }
    internal ValueKind Kind { get; }

    /// <summary>Rank, when the shape is known.</summary>
    public int? Rank => Shape?.Count;

    public override string ToString() =>
        $"{Name}: {ElementType?.ToString() ?? "?"}[{(Shape is null ? "?" : string.Join(", ", Shape))}]";
}

internal enum ValueKind { GraphInput, Initializer, NodeOutput }
