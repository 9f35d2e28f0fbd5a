using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Runtime;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>GGUF Q4_0 and Q8_0 blocks go into MatMulNBits as they are: the int4/int8 export computes
/// exactly what the float32 export of the same GGUF (dequantized) computes.</summary>
[Parallelizable(ParallelScope.None)]
public class GgufCarryTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("carry");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    private string Export(string gguf, string name, QuantizationOptions? q)
    {
        string folder = Path.Combine(_root, name);
        ModelFolderWriter.Export(gguf, null, folder, new ExportOptions { Lowering = Lowering.Ort, Quantization = q });
        return folder;
    }

    private static float MaxDifference(string a, string b, int vocab)
    {
        using var first = new DecoderSession(a);
        using var second = new DecoderSession(b);
        long[] ids = [1, 17, 250, 3, 99, 400, 12, 7, 301, 45];
        float max = 0;
        var x = first.Append(ids[..1], 1).ToArray();
        var y = second.Append(ids[..1], 1).ToArray();
        for (int t = 1; ; t++)
        {
            for (int v = 0; v < vocab; v++) max = Math.Max(max, Math.Abs(x[v] - y[v]));
            if (t == ids.Length) return max;
            x = first.Step(ids[t..(t + 1)]).ToArray();
            y = second.Step(ids[t..(t + 1)]).ToArray();
        }
    }

    [TestCase(2u, 4, "Q4_0")]
    [TestCase(8u, 8, "Q8_0")]
    public void Blocks_are_carried_without_a_float_round_trip(uint ggmlType, int bits, string format)
    {
        // Every projection's rows are a multiple of 32, so every one is stored in the block format.
        var config = new DecoderConfig
        {
            ModelType = "llama", HiddenSize = 64, IntermediateSize = 128, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 16,
            VocabSize = 512, MaxPositions = 64, TieWordEmbeddings = false, BosTokenId = 1, EosTokenIds = [2],
        };
        var weights = InMemoryWeights.Random(Modeling.Families.FamilyRegistry.For(config).ExpectedWeights(config), 4);
        string gguf = Path.Combine(_root, $"model-{format}.gguf");
        GgufTestWriter.Write(gguf, config, weights, ggmlType);

        string fp32 = Export(gguf, "fp32", null);
        string carried = Export(gguf, "carried", new QuantizationOptions { Bits = bits, BlockSize = 32 });
        Assert.That(MaxDifference(fp32, carried, config.VocabSize), Is.LessThan(1e-4f), $"{format} blocks carried into int{bits} compute the dequantized weights exactly");

        if (bits == 4)
        {
            // Requantizing would not be exact: Q4_0 scales put the extreme at -8, ours at +-7.
            var requantized = new QuantizationOptions { Bits = 4, BlockSize = 64 };
            Assert.That(MaxDifference(fp32, Export(gguf, "requantized", requantized), config.VocabSize), Is.GreaterThan(1e-3f));
        }
    }
}
