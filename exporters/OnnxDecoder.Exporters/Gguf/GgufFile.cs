using System.Buffers.Binary;
using System.Text;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.Gguf;

/// <summary>ggml tensor types this reader dequantises (values are ggml's).</summary>
public enum GgmlType : uint { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30 }

/// <summary>One tensor of a GGUF file. <see cref="Shape"/> is PyTorch order (GGUF's ne reversed).</summary>
public sealed record GgufTensor(string Name, GgmlType Type, long[] Shape, long Offset, long ByteLength);

/// <summary>
/// A memory-mapped GGUF v3 file parsed as hostile input: caps on string length, array length,
/// tensor and metadata counts and dimensions (at most 4); checked size arithmetic (a dimension of
/// 2^42+1 cannot wrap); array element types checked before use; the alignment a power of two; every
/// tensor's data inside the file, aligned, and sharing no byte with another tensor's; tensor names
/// unique. Tensors are read lazily and dequantised to float32.
/// </summary>
public sealed class GgufFile : IDisposable
{
    public const uint Magic = 0x46554747; // "GGUF"
    private const ulong MaxStringBytes = 1 << 20, MaxArrayLength = 1 << 24, MaxTensors = 1 << 16, MaxMetadata = 1 << 16;
    private const int MaxDims = 4;
    private readonly MappedFile _file;

    private GgufFile(MappedFile file) => _file = file;

    public string Path => _file.Path;
    public uint Version { get; private set; }
    public IReadOnlyDictionary<string, object> Metadata { get; private set; } = new Dictionary<string, object>();
    public IReadOnlyDictionary<string, GgufTensor> Tensors { get; private set; } = new Dictionary<string, GgufTensor>();
    public long Alignment { get; private set; } = 32;

    public static GgufFile Open(string path) => MappedFile.Parse(path, file =>
    {
        var gguf = new GgufFile(file);
        gguf.Parse();
        return gguf;
    });

    public void Dispose() => _file.Dispose();

    private ModelFormatException Bad(string problem) => new(Path, problem);

    private sealed class Cursor(GgufFile owner)
    {
        public long Position;

        private ReadOnlySpan<byte> Take(long count)
        {
            if (count < 0 || count > owner._file.Length - Position)
                throw owner.Bad($"file ends at byte {owner._file.Length} while reading {count} bytes at {Position} (truncated?)");
            var span = owner._file.Span(Position, (int)count);
            Position += count;
            return span;
        }

        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
        public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

        public string String(string what)
        {
            ulong length = U64();
            if (length > MaxStringBytes) throw owner.Bad($"{what}: string length {length} exceeds the {MaxStringBytes}-byte cap");
            try
            {
                return new UTF8Encoding(false, true).GetString(Take((long)length));
            }
            catch (DecoderFallbackException)
            {
                throw owner.Bad($"{what}: string is not valid UTF-8");
            }
        }

        public object Value(uint type, string key, int depth = 0) => type switch
        {
            0 => Take(1)[0],
            1 => (sbyte)Take(1)[0],
            2 => BinaryPrimitives.ReadUInt16LittleEndian(Take(2)),
            3 => BinaryPrimitives.ReadInt16LittleEndian(Take(2)),
            4 => U32(),
            5 => BinaryPrimitives.ReadInt32LittleEndian(Take(4)),
            6 => BinaryPrimitives.ReadSingleLittleEndian(Take(4)),
            7 => Take(1)[0] switch { 0 => false, 1 => true, var b => throw owner.Bad($"metadata '{key}': bool byte {b} is not 0 or 1") },
            8 => String($"metadata '{key}'"),
            9 => Array(key, depth),
            10 => U64(),
            11 => BinaryPrimitives.ReadInt64LittleEndian(Take(8)),
            12 => BinaryPrimitives.ReadDoubleLittleEndian(Take(8)),
            _ => throw owner.Bad($"metadata '{key}': unknown value type {type}"),
        };

        private object Array(string key, int depth)
        {
            if (depth > 0) throw owner.Bad($"metadata '{key}': nested arrays are not supported");
            uint elementType = U32();
            if (elementType > 12 || elementType == 9) throw owner.Bad($"metadata '{key}': array element type {elementType} is not valid");
            ulong count = U64();
            if (count > MaxArrayLength) throw owner.Bad($"metadata '{key}': array length {count} exceeds the cap of {MaxArrayLength}");
            // Every element takes at least one byte: a count larger than the rest of the file is a lie.
            if (count > (ulong)(owner._file.Length - Position)) throw owner.Bad($"metadata '{key}': array of {count} elements cannot fit in the rest of the file");
            var items = new object[count];
            for (ulong i = 0; i < count; i++) items[i] = Value(elementType, key, depth + 1);
            return items;
        }
    }

    private void Parse()
    {
        var cursor = new Cursor(this);
        if (_file.Length < 24) throw Bad($"file is {_file.Length} bytes, too short for a GGUF header");
        if (cursor.U32() != Magic) throw Bad("not a GGUF file (wrong magic)");
        Version = cursor.U32();
        if (Version != 3) throw Bad($"GGUF version {Version} is not supported (only 3)");
        ulong tensorCount = cursor.U64(), metadataCount = cursor.U64();
        if (tensorCount > MaxTensors) throw Bad($"tensor count {tensorCount} exceeds the cap of {MaxTensors}");
        if (metadataCount > MaxMetadata) throw Bad($"metadata count {metadataCount} exceeds the cap of {MaxMetadata}");

        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (ulong i = 0; i < metadataCount; i++)
        {
            string key = cursor.String("metadata key");
            uint type = cursor.U32();
            if (!metadata.TryAdd(key, cursor.Value(type, key))) throw Bad($"metadata key '{key}' appears twice");
        }
        Metadata = metadata;
        if (metadata.TryGetValue("general.alignment", out var alignment))
        {
            if (alignment is not uint a || a == 0 || (a & (a - 1)) != 0 || a > 1 << 20) throw Bad($"general.alignment ({alignment}) must be a power of two up to 2^20");
            Alignment = a;
        }

        var infos = new List<(string Name, GgmlType Type, long[] Shape, ulong Offset)>();
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = cursor.String("tensor name");
            uint dims = cursor.U32();
            if (dims == 0 || dims > MaxDims) throw Bad($"tensor '{name}' has {dims} dimensions (1 to {MaxDims})");
            var ne = new long[dims];
            for (int d = 0; d < dims; d++)
            {
                ulong size = cursor.U64();
                if (size == 0 || size > long.MaxValue) throw Bad($"tensor '{name}' dimension {d} is {size}");
                ne[d] = (long)size;
            }
            uint rawType = cursor.U32();
            if (!Enum.IsDefined(typeof(GgmlType), rawType)) throw Bad($"tensor '{name}' has ggml type {rawType}, which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
            ulong offset = cursor.U64();
            infos.Add((name, (GgmlType)rawType, ne.Reverse().ToArray(), offset));
        }

        long dataStart = checked((cursor.Position + Alignment - 1) / Alignment * Alignment);
        var tensors = new Dictionary<string, GgufTensor>(StringComparer.Ordinal);
        foreach (var (name, type, shape, offset) in infos)
        {
            long bytes;
            try
            {
                long elements = ElementTypes.ElementCount(shape);
                var (blockElements, blockBytes) = BlockSize(type);
                if (shape[^1] % blockElements != 0) throw Bad($"tensor '{name}' rows of {shape[^1]} are not a multiple of {type}'s block of {blockElements}");
                bytes = checked(elements / blockElements * blockBytes);
            }
            catch (OverflowException)
            {
                throw Bad($"tensor '{name}' shape [{string.Join(", ", shape)}] overflows");
            }
            if (offset % (ulong)Alignment != 0) throw Bad($"tensor '{name}' offset {offset} is not aligned to {Alignment}");
            if (offset > (ulong)(_file.Length - dataStart) || bytes > _file.Length - dataStart - (long)offset)
                throw Bad($"tensor '{name}' data (offset {offset}, {bytes} bytes) runs past the end of the file");
            if (!tensors.TryAdd(name, new GgufTensor(name, type, shape, dataStart + (long)offset, bytes))) throw Bad($"tensor '{name}' appears twice");
        }
        // Two tensors sharing bytes would export one weight's data as another's: each range must end before the next begins.
        GgufTensor? previous = null;
        foreach (var tensor in tensors.Values.OrderBy(t => t.Offset).ThenBy(t => t.ByteLength))
        {
            if (previous is not null && tensor.Offset < previous.Offset + previous.ByteLength)
                throw Bad($"tensor '{tensor.Name}' data (offset {tensor.Offset - dataStart}, {tensor.ByteLength} bytes) overlaps tensor '{previous.Name}' " +
                    $"(offset {previous.Offset - dataStart}, {previous.ByteLength} bytes): the file is corrupt, re-convert it");
            previous = tensor;
        }
        Tensors = tensors;
    }

    /// <summary>(elements per block, bytes per block) of a ggml type.</summary>
    public static (int Elements, int Bytes) BlockSize(GgmlType type) => type switch
    {
        GgmlType.F32 => (1, 4),
        GgmlType.F16 or GgmlType.BF16 => (1, 2),
        GgmlType.Q8_0 => (32, 34),
        GgmlType.Q4_0 => (32, 18),
        GgmlType.Q4_K => (256, 144),
        GgmlType.Q6_K => (256, 210),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported ggml type"),
    };

    /// <summary>A lazy float32 tensor: dequantised block by block as it is written.</summary>
    public ITensorSource Tensor(string name) => Slice(Tensors[name]);

    /// <summary>Entry <paramref name="index"/> along the outermost axis of a stacked tensor (e.g. one expert of [E, rows, cols]).</summary>
    public ITensorSource Tensor(string name, int index)
    {
        var tensor = Tensors[name];
        long count = tensor.Shape[0];
        if (index < 0 || index >= count) throw new ArgumentOutOfRangeException(nameof(index), index, $"{name} has {count} entries");
        long bytes = tensor.ByteLength / count;
        return Slice(tensor with { Shape = tensor.Shape[1..], Offset = tensor.Offset + index * bytes, ByteLength = bytes });
    }

    private ITensorSource Slice(GgufTensor tensor)
    {
        if (tensor.Type == GgmlType.F32) return _file.Tensor(ElementType.Float, tensor.Shape, tensor.Offset);
        return TensorData.Lazy(ElementType.Float, tensor.Shape, stream =>
        {
            var (blockElements, blockBytes) = BlockSize(tensor.Type);
            int blocksPerChunk = Math.Max(1, (1 << 16) / blockElements);
            var output = new float[blocksPerChunk * blockElements];
            long blocks = tensor.ByteLength / blockBytes;
            for (long block = 0; block < blocks; block += blocksPerChunk)
            {
                int count = (int)Math.Min(blocksPerChunk, blocks - block);
                var source = _file.Span(tensor.Offset + block * blockBytes, count * blockBytes);
                for (int b = 0; b < count; b++)
                    GgmlDequantize.Block(tensor.Type, source.Slice(b * blockBytes, blockBytes), output.AsSpan(b * blockElements, blockElements));
                stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(output.AsSpan(0, count * blockElements)));
            }
        });
    }

    /// <summary>A copy of raw bytes of the file (range-checked), e.g. one tensor's quantized blocks.</summary>
    public byte[] RawBytes(long offset, long length)
    {
        if (length > Array.MaxLength) throw Bad($"a {length}-byte range is too large to copy");
        _file.CheckRange(offset, length);
        var bytes = new byte[length];
        using (var stream = new MemoryStream(bytes)) _file.CopyTo(stream, offset, length);
        return bytes;
    }

    /// <summary>
    /// The chat templates in the metadata, as (name, Jinja source): tokenizer.chat_template is the
    /// "default" one; llama.cpp's converter stores further named ones (e.g. "tool_use") under
    /// tokenizer.chat_template.NAME and lists their names in tokenizer.chat_templates.
    /// </summary>
    public IReadOnlyList<(string Name, string Template)> ChatTemplates()
    {
        var templates = new List<(string, string)>();
        if (Metadata.TryGetValue("tokenizer.chat_template", out var main))
            templates.Add(("default", main as string ?? throw Bad($"metadata 'tokenizer.chat_template' must be a string, found {main.GetType().Name}")));
        if (!Metadata.TryGetValue("tokenizer.chat_templates", out var listed)) return templates;
        if (listed is not object[] names) throw Bad($"metadata 'tokenizer.chat_templates' must be an array of names, found {listed.GetType().Name}");
        foreach (var item in names)
        {
            string name = item as string ?? throw Bad("metadata 'tokenizer.chat_templates' must hold strings");
            if (name == "default" && templates.Count > 0) continue; // the default is tokenizer.chat_template itself
            if (templates.Any(t => t.Item1 == name)) throw Bad($"metadata 'tokenizer.chat_templates' lists '{name}' twice");
            string key = $"tokenizer.chat_template.{name}";
            if (!Metadata.TryGetValue(key, out var template)) throw Bad($"metadata 'tokenizer.chat_templates' lists '{name}' but '{key}' is missing");
            templates.Add((name, template as string ?? throw Bad($"metadata '{key}' must be a string, found {template.GetType().Name}")));
        }
        return templates;
    }

    public T? Get<T>(string key) where T : class => Metadata.TryGetValue(key, out var v) ? v as T : null;

    /// <summary>A whole-number metadata value of any integer type, or null.</summary>
    public long? Integer(string key) => Metadata.TryGetValue(key, out var v) ? v switch
    {
        byte b => b, sbyte sb => sb, ushort us => us, short s => s, uint ui => ui, int i => i, ulong ul when ul <= long.MaxValue => (long)ul, long l => l,
        _ => throw Bad($"metadata '{key}' must be an integer, found {v.GetType().Name}"),
    } : null;

    public double? Number(string key) => Metadata.TryGetValue(key, out var v) ? v switch
    {
        float f => f, double d => d, _ => Integer(key),
    } : null;
}

/// <summary>ggml block formats, dequantised to float32 (layouts from ggml's block definitions).</summary>
public static class GgmlDequantize
{
    public static void Block(GgmlType type, ReadOnlySpan<byte> block, Span<float> output)
    {
        switch (type)
        {
            case GgmlType.F16:
                output[0] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block));
                break;
            case GgmlType.BF16:
                output[0] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(block) << 16);
                break;
            case GgmlType.Q8_0:
            {
                // { f16 d; int8 q[32]; }  x = d * q
                float d = Half(block, 0);
                for (int i = 0; i < 32; i++) output[i] = d * (sbyte)block[2 + i];
                break;
            }
            case GgmlType.Q4_0:
            {
                // { f16 d; u8 qs[16]; }  x[j] = d * (low nibble - 8), x[j + 16] = d * (high nibble - 8)
                float d = Half(block, 0);
                for (int j = 0; j < 16; j++)
                {
                    output[j] = d * ((block[2 + j] & 0xF) - 8);
                    output[j + 16] = d * ((block[2 + j] >> 4) - 8);
                }
                break;
            }
            case GgmlType.Q4_K:
            {
                // { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }: 8 sub-blocks of 32 with 6-bit scales and mins
                float d = Half(block, 0), min = Half(block, 2);
                var scales = block.Slice(4, 12);
                var qs = block.Slice(16, 128);
                int outIndex = 0, scaleIndex = 0;
                for (int j = 0; j < 256; j += 64)
                {
                    var (sc1, m1) = ScaleMin(scaleIndex, scales);
                    var (sc2, m2) = ScaleMin(scaleIndex + 1, scales);
                    float d1 = d * sc1, mn1 = min * m1, d2 = d * sc2, mn2 = min * m2;
                    var q = qs.Slice(j / 2, 32);
                    for (int l = 0; l < 32; l++) output[outIndex++] = d1 * (q[l] & 0xF) - mn1;
                    for (int l = 0; l < 32; l++) output[outIndex++] = d2 * (q[l] >> 4) - mn2;
                    scaleIndex += 2;
                }
                break;
            }
            case GgmlType.Q6_K:
            {
                // { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }: 16 sub-blocks of 16, 6-bit quants offset by 32
                var ql = block.Slice(0, 128);
                var qh = block.Slice(128, 64);
                var sc = block.Slice(192, 16);
                float d = Half(block, 208);
                for (int n = 0; n < 2; n++)
                {
                    int y = n * 128, l0 = n * 64, h0 = n * 32, s0 = n * 8;
                    for (int l = 0; l < 32; l++)
                    {
                        int scale = l / 16;
                        int q1 = ((ql[l0 + l] & 0xF) | ((qh[h0 + l] >> 0 & 3) << 4)) - 32;
                        int q2 = ((ql[l0 + l + 32] & 0xF) | ((qh[h0 + l] >> 2 & 3) << 4)) - 32;
                        int q3 = ((ql[l0 + l] >> 4) | ((qh[h0 + l] >> 4 & 3) << 4)) - 32;
                        int q4 = ((ql[l0 + l + 32] >> 4) | ((qh[h0 + l] >> 6 & 3) << 4)) - 32;
                        output[y + l] = d * (sbyte)sc[s0 + scale] * q1;
                        output[y + l + 32] = d * (sbyte)sc[s0 + scale + 2] * q2;
                        output[y + l + 64] = d * (sbyte)sc[s0 + scale + 4] * q3;
                        output[y + l + 96] = d * (sbyte)sc[s0 + scale + 6] * q4;
                    }
                }
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, "not a block type");
        }
    }

    private static float Half(ReadOnlySpan<byte> block, int at) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block.Slice(at, 2)));

    /// <summary>Q4_K's packed 6-bit scale and min of sub-block j.</summary>
    private static (int Scale, int Min) ScaleMin(int j, ReadOnlySpan<byte> q) => j < 4
        ? (q[j] & 63, q[j + 4] & 63)
        : ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));
}
