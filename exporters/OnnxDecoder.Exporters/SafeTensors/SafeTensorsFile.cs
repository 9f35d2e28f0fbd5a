using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>One tensor entry of a safetensors header.</summary>
public sealed record SafeTensorEntry(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>
/// A memory-mapped .safetensors file, parsed as hostile input: an 8-byte little-endian header
/// length capped at 100 MB, a UTF-8 JSON header, dtypes F32/F16/BF16, byte ranges contiguous from
/// 0 that cover the data exactly, and end - begin == element count x dtype size (checked).
/// F16 and BF16 tensors are widened to float32 when read; U8 tensors (MXFP4 blocks and scales) are read as bytes
/// (<see cref="RawBytes"/>).
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    public const long MaxHeaderBytes = 100L * 1024 * 1024;
    private const int MaxDims = 8;
    private readonly MappedFile _file;
    private readonly long _dataStart;

    private SafeTensorsFile(MappedFile file, long dataStart, Dictionary<string, SafeTensorEntry> entries, Dictionary<string, string> metadata)
    {
        _file = file;
        _dataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
    }

    public string Path => _file.Path;
    public IReadOnlyDictionary<string, SafeTensorEntry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public static int DTypeSize(string dtype) => dtype switch
    {
        "F32" => 4,
        "F16" or "BF16" => 2,
        "U8" => 1,
        _ => 0,
    };

    public static SafeTensorsFile Open(string path) => MappedFile.Parse(path, Parse);

    private static SafeTensorsFile Parse(MappedFile file)
    {
        ModelFormatException Bad(string problem) => new(file.Path, problem);
        if (file.Length < 8) throw Bad($"file is {file.Length} bytes, too short for the 8-byte header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(file.Span(0, 8));
        if (headerLength < 2 || headerLength > (ulong)MaxHeaderBytes)
            throw Bad($"header length {headerLength} is outside 2..{MaxHeaderBytes} bytes");
        if ((long)headerLength > file.Length - 8) throw Bad($"header length {headerLength} runs past the end of the file ({file.Length} bytes)");
        long dataStart = 8 + (long)headerLength;
        long dataLength = file.Length - dataStart;

        string json;
        try
        {
            json = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(file.Span(8, (int)headerLength));
        }
        catch (DecoderFallbackException)
        {
            throw Bad("header is not valid UTF-8");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw Bad($"header is not valid JSON ({e.Message})");
        }

        var entries = new Dictionary<string, SafeTensorEntry>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object) throw Bad("header must be a JSON object");
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object) throw Bad("__metadata__ must be an object of strings");
                    foreach (var m in property.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : throw Bad($"__metadata__.{m.Name} must be a string");
                    continue;
                }
                if (entries.ContainsKey(property.Name)) throw Bad($"tensor '{property.Name}' is listed twice");
                entries[property.Name] = ParseEntry(property, Bad);
            }
        }

        // Ranges must tile the data region exactly: sorted by begin, each starts where the last ended.
        long expected = 0;
        foreach (var entry in entries.Values.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (entry.Begin != expected)
                throw Bad(entry.Begin > expected
                    ? $"tensor '{entry.Name}' starts at {entry.Begin}, leaving a gap after byte {expected}"
                    : $"tensor '{entry.Name}' overlaps the tensor before it (starts at {entry.Begin}, expected {expected})");
            expected = entry.End;
        }
        if (expected != dataLength)
            throw Bad(expected > dataLength
                ? $"tensor data needs {expected} bytes but the file holds {dataLength} after the header (truncated?)"
                : $"the file has {dataLength - expected} bytes after the last tensor");
        return new SafeTensorsFile(file, dataStart, entries, metadata);
    }

    private static SafeTensorEntry ParseEntry(JsonProperty property, Func<string, ModelFormatException> bad)
    {
        string name = property.Name;
        var value = property.Value;
        if (value.ValueKind != JsonValueKind.Object) throw bad($"tensor '{name}' must be an object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String) throw bad($"tensor '{name}' has no dtype");
        string dtype = dtypeElement.GetString()!;
        int size = DTypeSize(dtype);
        if (size == 0) throw bad($"tensor '{name}' has dtype '{dtype}', which is not supported (F32, F16, BF16; U8 for MXFP4 blocks and scales)");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array) throw bad($"tensor '{name}' has no shape");
        if (shapeElement.GetArrayLength() > MaxDims) throw bad($"tensor '{name}' has {shapeElement.GetArrayLength()} dimensions (at most {MaxDims})");
        var shape = new long[shapeElement.GetArrayLength()];
        int i = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0) throw bad($"tensor '{name}' has an invalid dimension {d.GetRawText()}");
            shape[i++] = dim;
        }
        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw bad($"tensor '{name}' needs data_offsets [begin, end]");
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw bad($"tensor '{name}' has invalid data_offsets [{offsets[0].GetRawText()}, {offsets[1].GetRawText()}]");
        long bytes;
        try
        {
            bytes = checked(ElementTypes.ElementCount(shape) * size);
        }
        catch (OverflowException)
        {
            throw bad($"tensor '{name}' shape [{string.Join(", ", shape)}] overflows");
        }
        if (end - begin != bytes)
            throw bad($"tensor '{name}' spans {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtype} needs {bytes}");
        return new SafeTensorEntry(name, dtype, shape, begin, end);
    }

    /// <summary>A lazy float32 tensor (F16 and BF16 are widened chunk by chunk).</summary>
    public ITensorSource Tensor(string name)
    {
        var entry = Entries[name];
        if (entry.DType == "U8")
            throw new ModelFormatException(Path, $"tensor '{name}' has dtype U8, which only MXFP4 checkpoints' *_blocks / *_scales pairs may have (config.json quantization_config.quant_method \"mxfp4\")");
        long offset = _dataStart + entry.Begin, length = entry.End - entry.Begin;
        if (entry.DType == "F32") return _file.Tensor(ElementType.Float, entry.Shape, offset);
        return TensorData.Lazy(ElementType.Float, entry.Shape, stream =>
        {
            const int chunkElements = 1 << 16;
            var floats = new float[chunkElements];
            for (long done = 0; done < length; done += 2 * chunkElements)
            {
                int count = (int)Math.Min(chunkElements, (length - done) / 2);
                var source = _file.Span(offset + done, count * 2);
                for (int i = 0; i < count; i++)
                {
                    ushort bits = BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(2 * i, 2));
                    floats[i] = entry.DType == "F16" ? (float)BitConverter.UInt16BitsToHalf(bits) : BitConverter.Int32BitsToSingle(bits << 16);
                }
                stream.Write(MemoryMarshal.AsBytes(floats.AsSpan(0, count)));
            }
        });
    }

    /// <summary>Bytes [start, start + count) of <paramref name="entry"/>'s data, as stored.</summary>
    public ReadOnlySpan<byte> RawBytes(SafeTensorEntry entry, long start, int count)
    {
        if (!ReferenceEquals(Entries.GetValueOrDefault(entry.Name), entry)) throw new ArgumentException($"tensor '{entry.Name}' is not an entry of {Path}");
        if (start < 0 || count < 0 || start > entry.End - entry.Begin - count)
            throw new ArgumentOutOfRangeException(nameof(start), $"bytes [{start}, {start} + {count}) lie outside tensor '{entry.Name}' ({entry.End - entry.Begin} bytes)");
        return _file.Span(_dataStart + entry.Begin + start, count);
    }

    public void Dispose() => _file.Dispose();
}

/// <summary>Writes a safetensors file of float32 (F32) and byte (U8) tensors (for synth checkpoints and tests), streaming tensor by tensor.</summary>
public static class SafeTensorsWriter
{
    public static void Write(string path, IReadOnlyList<(string Name, ITensorSource Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new System.Text.Json.Nodes.JsonObject();
        if (metadata is { Count: > 0 })
            header["__metadata__"] = new System.Text.Json.Nodes.JsonObject(metadata.Select(kv => KeyValuePair.Create(kv.Key, (System.Text.Json.Nodes.JsonNode?)kv.Value)));
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            string dtype = tensor.ElementType switch
            {
                ElementType.Float => "F32",
                ElementType.UInt8 => "U8",
                _ => throw new ArgumentException($"{name}: only float32 and uint8 tensors are written"),
            };
            header[name] = new System.Text.Json.Nodes.JsonObject
            {
                ["dtype"] = dtype,
                ["shape"] = new System.Text.Json.Nodes.JsonArray(tensor.Shape.Select(d => (System.Text.Json.Nodes.JsonNode)d).ToArray()),
                ["data_offsets"] = new System.Text.Json.Nodes.JsonArray(offset, offset + tensor.ByteLength),
            };
            offset += tensor.ByteLength;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padding = (8 - json.Length % 8) % 8; // the format pads the header with spaces to 8 bytes
        string temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)(json.Length + padding));
            stream.Write(length);
            stream.Write(json);
            for (int i = 0; i < padding; i++) stream.WriteByte((byte)' ');
            foreach (var (_, tensor) in tensors) tensor.WriteTo(stream);
        }
        File.Move(temp, path, overwrite: true);
    }
}
