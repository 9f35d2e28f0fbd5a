using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Onnx;
using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>The least-error block scales: never a larger reconstruction error than round-to-nearest from the block's
/// range, and the blocks they make read back in ONNX Runtime (MatMulNBits, GatherBlockQuantized) exactly as our
/// dequantizer reads them.</summary>
public class ScaleSearchTests
{
    /// <summary>Rows of one block each: random and adversarial (an outlier, all equal, zeros, tiny and subnormal values,
    /// two values, alternating signs, a single non-zero, huge values).</summary>
    private static (float[] Weights, int Rows, int RandomRows) Blocks(int block, int seed)
    {
        var random = new Random(seed);
        float Gaussian() => (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        var rows = new List<float[]>();
        for (int r = 0; r < 24; r++) rows.Add(Enumerable.Range(0, block).Select(_ => Gaussian() * 0.02f).ToArray());
        for (int r = 0; r < 8; r++) rows.Add(Enumerable.Range(0, block).Select(_ => (float)(random.NextDouble() * 3 - 1)).ToArray()); // skewed
        int randomRows = rows.Count;
        float[] Row(Func<int, float> value) => Enumerable.Range(0, block).Select(value).ToArray();
        rows.Add(Row(i => i == 5 ? 40f : Gaussian() * 0.1f));          // one positive outlier
        rows.Add(Row(i => i == 0 ? -40f : Gaussian() * 0.1f));         // one negative outlier
        rows.Add(Row(_ => 0.37f));                                      // all equal
        rows.Add(Row(_ => -2.5f));
        rows.Add(Row(_ => 0f));                                         // all zero
        rows.Add(Row(i => Gaussian() * 1e-30f));                        // tiny
        rows.Add(Row(i => i % 3 == 0 ? 1e-41f : -3e-42f));              // subnormal
        rows.Add(Row(i => i % 2 == 0 ? 1f : -1f));                      // alternating signs
        rows.Add(Row(i => i == block / 2 ? 0.8f : 0f));                 // one non-zero
        rows.Add(Row(i => i < block / 2 ? 0.1f : 0.9f));                // two values
        rows.Add(Row(i => Gaussian() * 1e30f));                         // huge
        rows.Add(Row(i => i == 1 ? 3f : i == 2 ? -2.9f : Gaussian() * 0.05f)); // outliers on both sides
        return (rows.SelectMany(r => r).ToArray(), rows.Count, randomRows);
    }

    /// <summary>sum over row r of (w - dequantized)^2, computed on what the dequantizer gives back.</summary>
    private static double[] RowErrors(float[] w, float[] dequantized, int rows, int k) =>
        Enumerable.Range(0, rows).Select(r => Enumerable.Range(r * k, k).Sum(i => Math.Pow((double)w[i] - dequantized[i], 2))).ToArray();

    [Test]
    public void Least_error_scales_never_reconstruct_worse_than_round_to_nearest(
        [Values(4, 8)] int bits, [Values(true, false)] bool symmetric, [Values(32, 64, 128)] int block)
    {
        var (w, rows, randomRows) = Blocks(block, seed: bits * 100 + block + (symmetric ? 1 : 0));
        var plainOptions = new QuantizationOptions { Bits = bits, BlockSize = block, Symmetric = symmetric, SearchScales = false };
        var plain = RowErrors(w, BlockQuantizer.Quantize(w, rows, block, plainOptions).Dequantize(), rows, block);
        var searched = RowErrors(w, BlockQuantizer.Quantize(w, rows, block, plainOptions with { SearchScales = true }).Dequantize(), rows, block);
        for (int r = 0; r < rows; r++)
            Assert.That(searched[r], Is.LessThanOrEqualTo(plain[r]), $"row {r}: least-error scales reconstruct worse than round-to-nearest");
        double ratio = searched.Take(randomRows).Sum() / plain.Take(randomRows).Sum();
        TestContext.Out.WriteLine($"int{bits} block {block} {(symmetric ? "symmetric" : "asymmetric")}: squared error {ratio:F3}x round-to-nearest's");
        Assert.That(ratio, Is.LessThan(bits == 4 ? 0.95 : 0.995), "the search finds better scales on random blocks");
        Assert.That(searched[randomRows + 4], Is.Zero, "an all-zero block is exact");
    }

    [Test]
    public void Least_error_per_channel_int8_never_reconstructs_worse()
    {
        var (w, rows, _) = Blocks(96, seed: 7);
        foreach (bool symmetric in new[] { true, false })
        {
            var plain = RowErrors(w, PerChannelWeight.Quantize(w, rows, 96, symmetric, searchScales: false).Dequantize(), rows, 96);
            var searched = RowErrors(w, PerChannelWeight.Quantize(w, rows, 96, symmetric).Dequantize(), rows, 96);
            for (int r = 0; r < rows; r++) Assert.That(searched[r], Is.LessThanOrEqualTo(plain[r]), $"row {r}, symmetric {symmetric}");
            Assert.That(searched.Sum(), Is.LessThan(plain.Sum()));
        }
    }

    [Test]
    public void Blocks_read_back_in_onnx_runtime_exactly_as_our_dequantizer_reads_them(
        [Values(4, 8)] int bits, [Values(true, false)] bool symmetric, [Values(32, 128)] int block)
    {
        const int n = 6, k = 256;
        var (rowsOfBlocks, _, _) = Blocks(k, seed: 3);
        var w = rowsOfBlocks.AsSpan(20 * k, n * k).ToArray(); // random and outlier rows
        var quantized = BlockQuantizer.Quantize(w, n, k, new QuantizationOptions { Bits = bits, BlockSize = block, Symmetric = symmetric });
        var expected = quantized.Dequantize();                                                       // [n, k]
        int blocks = quantized.Blocks;

        //   identity [k, k] --MatMulNBits(accuracy 0: fp32)--> [k, n] = W^T;   rows 0..n-1 --GatherBlockQuantized--> [n, blocks, block]
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, k, k);
        var ids = b.Input("ids", ElementType.Int64, n);
        var packed = b.Initializer("w.quantized", TensorData.FromBytes(ElementType.UInt8, quantized.Packed, n, blocks, quantized.BlobBytes));
        var scales = b.Initializer("w.scales", TensorData.From<float>(quantized.Scales, n * blocks));
        var zeros = symmetric ? null : b.Initializer("w.zero_points", TensorData.FromBytes(ElementType.UInt8, quantized.ZeroPoints!, quantized.ZeroPoints!.Length));
        var product = b.MsOp("MatMulNBits", [x, packed, scales, zeros], Attr.Int("K", k), Attr.Int("N", n), Attr.Int("bits", bits), Attr.Int("block_size", block));
        var gatherZeros = symmetric ? null : b.Initializer("w.gather_zero_points", TensorData.FromBytes(ElementType.UInt8,
            Enumerable.Range(0, n * blocks).Select(i => (byte)quantized.ZeroPoint(i / blocks, i % blocks)).ToArray(), n, blocks, 1));
        var gathered = b.MsOp("GatherBlockQuantized", [packed, ids, b.Op("Reshape", [scales, b.Int64s(n, blocks, 1)]), gatherZeros],
            Attr.Int("gather_axis", 0), Attr.Int("quantize_axis", 2), Attr.Int("block_size", block), Attr.Int("bits", bits));
        b.Output(product, "product", ElementType.Float, k, n);
        b.Output(gathered, "rows", ElementType.Float, n, blocks, block);
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(b.Build().ToModelProto().ToByteArray(), options);

        var identity = new float[k * k];
        for (int i = 0; i < k; i++) identity[i * k + i] = 1;
        using var xValue = OrtValue.CreateTensorValueFromMemory(identity, [k, k]);
        using var idsValue = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, n).Select(i => (long)i).ToArray(), [n]);
        using var outputs = session.Run(new RunOptions(), ["x", "ids"], [xValue, idsValue], ["product", "rows"]);
        var transposed = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        var rows = outputs[1].GetTensorDataAsSpan<float>().ToArray();
        for (int row = 0; row < n; row++)
            for (int col = 0; col < k; col++)
            {
                Assert.That(transposed[col * n + row], Is.EqualTo(expected[row * k + col]), $"MatMulNBits W[{row}, {col}]");
                Assert.That(rows[row * k + col], Is.EqualTo(expected[row * k + col]), $"GatherBlockQuantized W[{row}, {col}]");
            }
    }

    [Test]
    public void DynamicQuantizeMatMul_int8_reads_per_column_weights_and_stays_close_to_the_reference()
    {
        var config = TestConfigs.Base with { TieWordEmbeddings = true, IntermediateSize = 40 };
        var weights = TestConfigs.Weights(config.Validate());
        var q = new QuantizationOptions { Bits = 8, DynamicQuantizeMatMul = true };
        var model = Families.FamilyRegistry.For(config).Build(config, weights, new ExportOptions { Lowering = Lowering.Ort, Quantization = q });
        Assert.That(model.OpHistogram()["com.microsoft.DynamicQuantizeMatMul"], Is.EqualTo(2 * 4 + 1),
            "every projection (qkv, o, gate_up and down per layer; widths need no blocks) and the tied head");
        Assert.That(model.OpHistogram().ContainsKey("com.microsoft.MatMulNBits"), Is.False);
        Assert.That(() => new QuantizationOptions { Bits = 4, DynamicQuantizeMatMul = true }.Validate(), Throws.ArgumentException);

        // The reference on the per-output-row int8 weights; the kernel also quantizes activations, so it is close, not exact.
        var dequantized = new InMemoryWeights();
        foreach (var name in weights.Names)
        {
            var shape = weights.Shape(name);
            bool projected = name.EndsWith("proj.weight", StringComparison.Ordinal) && (name.Contains(".self_attn.") || name.Contains(".mlp."));
            dequantized.Add(name, projected ? PerChannelWeight.Quantize(weights.Values(name), (int)shape[0], (int)shape[1], symmetric: true).Dequantize() : weights.Values(name), shape);
        }
        const string table = "model.embed_tokens.weight";
        dequantized.Add("lm_head.weight", PerChannelWeight.Quantize(weights.Values(table), config.VocabSize, config.HiddenSize, symmetric: true).Dequantize(), weights.Shape(table));
        var untied = config with { TieWordEmbeddings = false };
        var ids = Inputs.Tokens(1, 7, config.VocabSize, seed: 5);
        var expected = new Reference.ReferenceDecoder(untied, dequantized).Forward(ids, Inputs.Ones(1, 7), Inputs.Positions(1, 0, 7));
        using var decoder = new OrtDecoder(config, weights, new ExportOptions { Lowering = Lowering.Ort, Quantization = q });
        var logits = decoder.Run(ids, Inputs.Ones(1, 7), Inputs.Positions(1, 0, 7)).Logits;
        Assert.That(Inputs.MaxAbsDifference(logits, expected), Is.LessThan(0.05f));
        var fp32 = new Reference.ReferenceDecoder(config, weights).Forward(ids, Inputs.Ones(1, 7), Inputs.Positions(1, 0, 7));
        Assert.That(Inputs.MaxAbsDifference(logits, fp32), Is.GreaterThan(1e-4f), "the weights are quantized");
    }
}
