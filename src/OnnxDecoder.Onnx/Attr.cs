using Google.Protobuf;
using OnnxDecoder.Onnx.Proto;
using static OnnxDecoder.Onnx.Proto.AttributeProto.Types;

namespace OnnxDecoder.Onnx;

/// <summary>A typed node attribute: <c>Attr.Int("axis", -1)</c>, <c>Attr.Floats("scales", ...)</c>.</summary>
public sealed class Attr
{
    private Attr(string name, AttributeType type, Action<AttributeProto> fill)
    {
        if (string.IsNullOrEmpty(name)) throw new ArgumentException("an attribute needs a name", nameof(name));
        Name = name;
        Type = type;
        _fill = fill;
    }

    private readonly Action<AttributeProto> _fill;
    public string Name { get; }
    public AttributeType Type { get; }

    public static Attr Int(string name, long value) => new(name, AttributeType.Int, a => a.I = value);
    public static Attr Float(string name, float value) => new(name, AttributeType.Float, a => a.F = value);
    public static Attr String(string name, string value) => new(name, AttributeType.String, a => a.S = ByteString.CopyFromUtf8(value));
    public static Attr Ints(string name, params long[] values) => new(name, AttributeType.Ints, a => a.Ints.AddRange(values));
    public static Attr Floats(string name, params float[] values) => new(name, AttributeType.Floats, a => a.Floats.AddRange(values));
    public static Attr Strings(string name, params string[] values) =>
        new(name, AttributeType.Strings, a => a.Strings.AddRange(values.Select(ByteString.CopyFromUtf8)));

    /// <summary>A small tensor held inline (for example a Constant node's value).</summary>
    public static Attr Tensor(string name, TensorProto value) => new(name, AttributeType.Tensor, a => a.T = value.Clone());

    internal AttributeProto ToProto()
    {
        var proto = new AttributeProto { Name = Name, Type = Type };
        _fill(proto);
        return proto;
    }
}
