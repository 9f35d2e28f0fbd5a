using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Onnx;

/// <summary>Tensor element types we build with; values equal ONNX's TensorProto.DataType.</summary>
public enum ElementType
{
    Float = 1,
    UInt8 = 2,
    Int8 = 3,
    UInt16 = 4,
    Int16 = 5,
    Int32 = 6,
    Int64 = 7,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    UInt32 = 12,
    UInt64 = 13,
    BFloat16 = 16,
    UInt4 = 21,
    Int4 = 22,
}

public static class ElementTypes
{
    /// <summary>Bytes per element; 4-bit types report 1 and are sized with <see cref="ByteLength"/>.</summary>
    public static int SizeOf(this ElementType type) => type switch
    {
        ElementType.Float or ElementType.Int32 or ElementType.UInt32 => 4,
        ElementType.Int64 or ElementType.UInt64 or ElementType.Double => 8,
        ElementType.Float16 or ElementType.BFloat16 or ElementType.Int16 or ElementType.UInt16 => 2,
        ElementType.UInt8 or ElementType.Int8 or ElementType.Bool or ElementType.UInt4 or ElementType.Int4 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown element type"),
    };

    public static bool IsFourBit(this ElementType type) => type is ElementType.UInt4 or ElementType.Int4;

    /// <summary>Bytes that <paramref name="elementCount"/> elements occupy (4-bit types pack two per byte).</summary>
    public static long ByteLength(this ElementType type, long elementCount)
    {
        if (elementCount < 0) throw new ArgumentOutOfRangeException(nameof(elementCount), elementCount, "element count is negative");
        return type.IsFourBit() ? checked((elementCount + 1) / 2) : checked(elementCount * type.SizeOf());
    }

    /// <summary>The ElementType for an ONNX data_type value, or null when we do not handle it.</summary>
    public static ElementType? FromOnnx(int dataType) =>
        Enum.IsDefined(typeof(ElementType), dataType) ? (ElementType)dataType : null;

    public static TensorProto.Types.DataType ToOnnx(this ElementType type) => (TensorProto.Types.DataType)(int)type;

    /// <summary>The lowest ONNX IR version that can carry this element type.</summary>
    public static int MinimumIrVersion(this ElementType type) => type switch
    {
        ElementType.UInt4 or ElementType.Int4 => 10,
        _ => 3,
    };

    /// <summary>Element count of a shape, with overflow and negative dimensions rejected.</summary>
    public static long ElementCount(IReadOnlyList<long> shape)
    {
        long count = 1;
        for (int i = 0; i < shape.Count; i++)
        {
            if (shape[i] < 0) throw new ArgumentException($"dimension {i} is negative ({shape[i]})", nameof(shape));
            count = checked(count * shape[i]);
        }
        return count;
    }
}
