using System.Runtime.InteropServices;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>
/// MXFP4 expert weights as transformers stores them (config.json <c>quantization_config.quant_method</c> "mxfp4",
/// GPT-OSS's released checkpoints): a stored pair
/// <code>
///   NAME_blocks  U8 [experts, out, in / 32, 16]   per block of 32 inputs, two FP4 (e2m1) values per byte, the low nibble first
///   NAME_scales  U8 [experts, out, in / 32]       per block, an e8m0 exponent s: the block's scale is 2^(s - 127)
/// </code>
/// reads as the float32 tensor NAME [experts, in, out]: transformers' convert_moe_packed_tensors dequantizes to
/// [experts, out, in] and transposes axes 1 and 2, giving the [in, out] experts its GptOssExperts multiplies with.
/// e2m1: sign bit 3, exponent bits 2..1, mantissa bit 0, so the 16 codes are +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}.
/// Every value is exact in float32 except a scale that overflows it (s = 255 on a nonzero value), which becomes an
/// infinity that the export's finiteness check refuses, naming the tensor.
/// </summary>
public static class Mxfp4Experts
{
    public const int BlockElements = 32, BlockBytes = BlockElements / 2;
    public const string BlocksSuffix = "_blocks", ScalesSuffix = "_scales";

    /// <summary>The e2m1 code points, indexed by the 4-bit code (OCP Microscaling Formats, FP4 E2M1).</summary>
    private static readonly float[] E2M1 = [0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f];

    /// <summary>Whether config.json says the checkpoint's experts are MXFP4; another quant_method is refused naming it.</summary>
    public static bool Declared(string configJson, string configPath)
    {
        using var document = JsonDocument.Parse(configJson, new JsonDocumentOptions { MaxDepth = 64 });
        if (document.RootElement.ValueKind != JsonValueKind.Object
            || !document.RootElement.TryGetProperty("quantization_config", out var quantization) || quantization.ValueKind == JsonValueKind.Null)
            return false;
        string? method = quantization.ValueKind == JsonValueKind.Object && quantization.TryGetProperty("quant_method", out var m) && m.ValueKind == JsonValueKind.String
            ? m.GetString() : null;
        return method == "mxfp4";
    }

    /// <summary>
    /// Replaces each NAME_blocks / NAME_scales pair in <paramref name="tensors"/> by NAME, dequantized on demand.
    /// A blocks tensor without its scales (or the reverse), a dtype other than U8, or shapes that do not pair
    /// ([E, out, G, 16] with [E, out, G]) are refused naming the tensor.
    /// </summary>
    public static Dictionary<string, Func<ITensorSource>> Pair(IDictionary<string, (SafeTensorsFile File, string StoredName)> tensors)
    {
        var dequantized = new Dictionary<string, Func<ITensorSource>>(StringComparer.Ordinal);
        foreach (var blocksName in tensors.Keys.Where(n => n.EndsWith(BlocksSuffix, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList())
        {
            string name = blocksName[..^BlocksSuffix.Length], scalesName = name + ScalesSuffix;
            var (blocksFile, blocksStored) = tensors[blocksName];
            if (!tensors.TryGetValue(scalesName, out var scales))
                throw new ModelFormatException(blocksFile.Path, $"MXFP4 tensor '{blocksStored}' has no '{scalesName}' beside it: the checkpoint is incomplete (download every shard)");
            var blocks = blocksFile.Entries[blocksStored];
            var scalesEntry = scales.File.Entries[scales.StoredName];
            foreach (var entry in new[] { blocks, scalesEntry })
                if (entry.DType != "U8")
                    throw new ModelFormatException(blocksFile.Path, $"MXFP4 tensor '{entry.Name}' has dtype {entry.DType}, expected U8");
            if (blocks.Shape.Length != 4 || blocks.Shape[3] != BlockBytes)
                throw new ModelFormatException(blocksFile.Path,
                    $"MXFP4 tensor '{blocksStored}' has shape [{string.Join(", ", blocks.Shape)}], expected [experts, out, in / {BlockElements}, {BlockBytes}]");
            if (!scalesEntry.Shape.SequenceEqual(blocks.Shape[..3]))
                throw new ModelFormatException(scales.File.Path,
                    $"MXFP4 tensor '{scales.StoredName}' has shape [{string.Join(", ", scalesEntry.Shape)}], expected [{string.Join(", ", blocks.Shape[..3])}] (one scale per block of '{blocksStored}')");
            long experts = blocks.Shape[0], rows = blocks.Shape[1], groups = blocks.Shape[2];
            long inputs;
            try
            {
                inputs = checked(groups * BlockElements);
                _ = checked(experts * rows * inputs * sizeof(float));
            }
            catch (OverflowException)
            {
                throw new ModelFormatException(blocksFile.Path, $"MXFP4 tensor '{blocksStored}' shape [{string.Join(", ", blocks.Shape)}] overflows when dequantized");
            }
            if (tensors.ContainsKey(name))
                throw new ModelFormatException(blocksFile.Path, $"tensor '{name}' is stored both as MXFP4 ('{blocksStored}') and unquantized: keep one of them");
            tensors.Remove(blocksName);
            tensors.Remove(scalesName);
            var blocksSource = (blocksFile, blocks);
            var scalesSource = (scales.File, scalesEntry);
            dequantized[name] = () => Dequantized(blocksSource, scalesSource, experts, rows, groups, inputs);
        }
        var lone = tensors.Keys.FirstOrDefault(n => n.EndsWith(ScalesSuffix, StringComparison.Ordinal) && tensors[n].File.Entries[tensors[n].StoredName].DType == "U8");
        if (lone is not null)
            throw new ModelFormatException(tensors[lone].File.Path, $"MXFP4 tensor '{tensors[lone].StoredName}' has no '{lone[..^ScalesSuffix.Length]}{BlocksSuffix}' beside it: the checkpoint is incomplete (download every shard)");
        return dequantized;
    }

    /// <summary>
    /// float32 [experts, in, out], written one block column at a time: the 32 input rows of block column g are
    /// decoded from every output row's block g into a [32, out] strip, so memory stays at one strip.
    /// </summary>
    private static ITensorSource Dequantized((SafeTensorsFile File, SafeTensorEntry Entry) blocks, (SafeTensorsFile File, SafeTensorEntry Entry) scales,
        long experts, long rows, long groups, long inputs)
    {
        string name = blocks.Entry.Name;
        int expertScales = rows * groups <= int.MaxValue / BlockBytes ? (int)(rows * groups)
            : throw new ModelFormatException(blocks.File.Path, $"MXFP4 tensor '{name}': one expert's blocks exceed 2 GiB, more than one read handles");
        int stripElements = BlockElements * rows <= int.MaxValue ? (int)(BlockElements * rows)
            : throw new ModelFormatException(blocks.File.Path, $"MXFP4 tensor '{name}' has too many rows ({rows})");
        return TensorData.Lazy(ElementType.Float, [experts, inputs, rows], stream =>
        {
            var strip = new float[stripElements];                                           // [32, out]
            Span<float> blockValues = stackalloc float[BlockElements];
            for (long e = 0; e < experts; e++)
                for (long g = 0; g < groups; g++)
                {
                    var expertBlocks = blocks.File.RawBytes(blocks.Entry, e * expertScales * BlockBytes, expertScales * BlockBytes); // [out, G, 16]
                    var expertExponents = scales.File.RawBytes(scales.Entry, e * expertScales, expertScales);                   // [out, G]
                    for (int r = 0; r < rows; r++)
                    {
                        int block = (int)(r * groups + g);
                        Decode(expertBlocks.Slice(block * BlockBytes, BlockBytes), expertExponents[block], blockValues);
                        for (int i = 0; i < BlockElements; i++) strip[i * rows + r] = blockValues[i];
                    }
                    stream.Write(MemoryMarshal.AsBytes(strip.AsSpan()));
                }
        });
    }

    /// <summary>One block: 16 bytes and its e8m0 exponent to 32 floats, element 2j from byte j's low nibble, 2j + 1 from its high nibble.</summary>
    public static void Decode(ReadOnlySpan<byte> block, byte exponent, Span<float> values)
    {
        // e2m1 values times 2^(s - 127) are exact in double and round only where float32 overflows (to infinity).
        double scale = Math.ScaleB(1.0, exponent - 127);
        for (int j = 0; j < BlockBytes; j++)
        {
            values[2 * j] = (float)(E2M1[block[j] & 0x0F] * scale);
            values[2 * j + 1] = (float)(E2M1[block[j] >> 4] * scale);
        }
    }
}
