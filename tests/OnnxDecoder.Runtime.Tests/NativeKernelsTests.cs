using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// Our MatMulNBits (ai.onnxdecoder.cpu, libonnxdecoder_kernels.so) on one-node graphs, every code path this CPU has,
/// judged two ways: against ONNX Runtime's own com.microsoft MatMulNBits at accuracy level 4 on the same inputs (an
/// independent implementation of the same arithmetic: per block of 32, A quantized to int8 with scale max|a| / 127), and
/// against a plain-loop fp32 dequantize-then-matmul here, within the bound activation quantization allows.
/// </summary>
public class NativeKernelsTests
{
    private const int Block = 32;

    /// <summary>The ISAs this CPU has, by .NET's own CPU detection (not the library's); each vector path also uses FMA,
    /// and the AVX-512BW one AVX-512F.</summary>
    private static IEnumerable<string> CpuIsas()
    {
        if (Avx512BW.IsSupported && Avx512F.IsSupported && Fma.IsSupported) yield return "avx512bw";
        if (Avx2.IsSupported && Fma.IsSupported) yield return "avx2";
        yield return "scalar";
    }

    [Test]
    public void The_library_is_built_into_the_test_output_on_linux_x64()
    {
        // CI must not lose the kernels silently: a build that skipped them (no gcc, a broken target) fails here.
        Assert.That(OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64, Is.True,
            "these tests run on Linux x64, where the runtime ships its kernels");
        string beside = Path.Combine(TestContext.CurrentContext.TestDirectory, NativeKernels.LibraryFileName);
        Assert.That(File.Exists(beside), Is.True, $"{beside} is missing: the OnnxDecoder.Runtime build did not compile it (gcc on PATH?)");
        Assert.That(NativeKernels.IsAvailable, Is.True, NativeKernels.UnavailableReason);
        Assert.That(NativeKernels.LibraryPath, Is.EqualTo(beside));
        Assert.That(NativeKernels.Isa, Is.EqualTo(CpuIsas().First()), "auto dispatch picks the widest ISA the CPU has");
    }

    private static readonly int[] Rows = [1, 3, 8, 130];

    [Test]
    public void Every_isa_gives_onnx_runtimes_accuracy_level_4_product_and_the_fp32_product_within_the_quantization_bound(
        [Values(4, 8)] int bits, [Values(32, 80, 96, 768)] int k, [Values(1, 7, 64, 300)] int n)
    {
        var isas = CpuIsas().Prepend("auto").ToArray();
        var random = new Random(bits * 100_003 + k * 1009 + n);
        int blocks = (k + Block - 1) / Block, blob = Block * bits / 8;
        var packed = new byte[n * blocks * blob];
        random.NextBytes(packed); // also fills the padding past K, which a zero-padded A must cancel
        var scales = new float[n * blocks];
        for (int i = 0; i < scales.Length; i++) scales[i] = (float)((random.NextDouble() - 0.3) * 0.05);
        var weight = Dequantize(packed, scales, bits, n, k); // [n, k]

        foreach (int rank in new[] { 2, 3 })
        {
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, IntraOpNumThreads = 2 };
            NativeKernels.Register(options);
            using var session = new InferenceSession(OneNodeGraphs(bits, k, n, rank, packed, scales, isas), options);
            foreach (int m in Rows)
            {
                var a = RandomRows(random, m, k);
                long[] shape = rank == 2 ? [m, k] : m switch { 1 => [1, 1, k], 3 => [3, 1, k], 8 => [2, 4, k], _ => [2, m / 2, k] };
                using var input = OrtValue.CreateTensorValueFromMemory(a, shape);
                using var outputs = session.Run(new RunOptions(), ["a"], [input], session.OutputNames.ToArray());
                var ort = outputs[0].GetTensorDataAsSpan<float>().ToArray();
                Assert.That(outputs[0].GetTensorTypeAndShape().Shape, Is.EqualTo(shape[..^1].Append(n).ToArray()));
                var (fp32, quantizationBound, termScale, ties) = Reference(a, weight, m, k, n);
                for (int o = 1; o < outputs.Count; o++)
                {
                    string where = $"isa {isas[o - 1]}, bits {bits}, [{string.Join(", ", shape)}] x [{k}, {n}]";
                    Assert.That(outputs[o].GetTensorTypeAndShape().Shape, Is.EqualTo(shape[..^1].Append(n).ToArray()), where);
                    var ours = outputs[o].GetTensorDataAsSpan<float>();
                    for (int i = 0; i < m * n; i++)
                    {
                        // Both quantize A alike, up to an activation that lies within float rounding of a .5 tie (a / scale_a
                        // and a * (1 / scale_a) differ in the last bits), which either may round to the other integer: it
                        // moves the output by scale_a |w|. What remains is float32 rounding of the block sums, under 1e-4
                        // of the magnitude of the terms summed (K <= 768 terms, float32 epsilon 6e-8).
                        Assert.That(Math.Abs(ours[i] - ort[i]), Is.LessThanOrEqualTo(1e-4 * termScale[i] + ties[i] + 1e-7),
                            $"{where}: Y[{i / n}, {i % n}] = {ours[i]}, ONNX Runtime's MatMulNBits gives {ort[i]}");
                        // Against fp32: each activation moves by at most half its block's step, scale_a / 2.
                        Assert.That(Math.Abs(ours[i] - fp32[i]), Is.LessThanOrEqualTo(quantizationBound[i] * 1.001 + 1e-6),
                            $"{where}: Y[{i / n}, {i % n}] = {ours[i]}, the fp32 product is {fp32[i]}");
                    }
                    if (m >= 3)
                        for (int j = 0; j < n; j++) Assert.That(ours[n + j], Is.EqualTo(0f), $"{where}: a zero row gives zeros");
                }
            }
        }
    }

    [Test]
    public void A_forced_isa_the_cpu_lacks_or_does_not_know_is_refused_when_the_session_loads()
    {
        var lacking = new[] { "avx512bw", "avx2" }.Except(CpuIsas()).Append("neon").ToArray();
        var packed = new byte[4 * 16];
        var scales = new float[4];
        foreach (string isa in lacking)
        {
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            NativeKernels.Register(options);
            var e = Assert.Throws<OnnxRuntimeException>(() => new InferenceSession(OneNodeGraphs(4, Block, 4, 2, packed, scales, [isa]), options).Dispose());
            Assert.That(e!.Message, Does.Contain(isa), "the error names the refused isa");
        }
    }

    /// <summary>
    /// One graph, one input a [.., K]: output 0 is com.microsoft MatMulNBits at accuracy level 4, then one of our nodes per
    /// entry of <paramref name="isas"/>, all over the same B [N, blocks, blob] and scales [N * blocks].
    /// </summary>
    private static byte[] OneNodeGraphs(int bits, int k, int n, int rank, byte[] packed, float[] scales, string[] isas)
    {
        int blocks = (k + Block - 1) / Block;
        var b = new GraphBuilder();
        b.UseOpset(NativeKernels.Domain, NativeKernels.OpsetVersion);
        Dim[] rows = rank == 2 ? ["m"] : ["batch", "seq"];
        var a = b.Input("a", ElementType.Float, [.. rows, k]);
        var weight = b.Initializer("w.quantized", TensorData.FromBytes(ElementType.UInt8, packed, n, blocks, Block * bits / 8));
        var scale = b.Initializer("w.scales", TensorData.From<float>(scales, n * blocks));
        Attr[] attributes = [Attr.Int("K", k), Attr.Int("N", n), Attr.Int("bits", bits), Attr.Int("block_size", Block), Attr.Int("accuracy_level", 4)];
        b.Output(b.MsOp("MatMulNBits", [a, weight, scale], attributes), "ort", ElementType.Float, [.. rows, n]);
        foreach (string isa in isas)
            b.Output(b.Node(NativeKernels.Domain, "MatMulNBits", [a, weight, scale], 1, [.. attributes, Attr.String("isa", isa)])[0], "ours_" + isa, ElementType.Float, [.. rows, n]);
        return b.Build().ToModelProto().ToByteArray();
    }

    /// <summary>Rows of mixed magnitude; row 1 (when there is one) all zero, and in row 2 one whole block zero.</summary>
    private static float[] RandomRows(Random random, int m, int k)
    {
        var a = new float[m * k];
        for (int i = 0; i < a.Length; i++) a[i] = (float)((random.NextDouble() * 2 - 1) * (1 + 4 * (i / Block % 3)));
        if (m >= 3)
        {
            Array.Clear(a, k, k);
            Array.Clear(a, 2 * k, Math.Min(Block, k));
        }
        return a;
    }

    /// <summary>W [n, k] = scale * (q - zero point), with MatMulNBits' layout: byte j of a 4-bit block holds element 2j low, 2j+1 high.</summary>
    private static float[] Dequantize(byte[] packed, float[] scales, int bits, int n, int k)
    {
        int blocks = (k + Block - 1) / Block, blob = Block * bits / 8, zero = 1 << (bits - 1);
        var w = new float[n * k];
        for (int row = 0; row < n; row++)
            for (int col = 0; col < k; col++)
            {
                int at = (row * blocks + col / Block) * blob, within = col % Block;
                int q = bits == 8 ? packed[at + within] : (within % 2 == 0 ? packed[at + within / 2] & 0xF : packed[at + within / 2] >> 4);
                w[row * k + col] = scales[row * blocks + col / Block] * (q - zero);
            }
        return w;
    }

    /// <summary>
    /// Y = A W^T in double [m, n]; the bound on what quantizing A per block can move each output, sum over blocks of
    /// (max|a| / 127) / 2 * sum |w|; the magnitude of the terms a quantized product sums, sum |a| |w|; and what rounding
    /// the activations near a .5 tie the other way can move it, sum over those of scale_a |w|.
    /// </summary>
    private static (double[] Product, double[] Bound, double[] TermScale, double[] Ties) Reference(float[] a, float[] w, int m, int k, int n)
    {
        var product = new double[m * n];
        var bound = new double[m * n];
        var terms = new double[m * n];
        var ties = new double[m * n];
        for (int row = 0; row < m; row++)
            for (int col = 0; col < n; col++)
            {
                double sum = 0, step = 0, magnitude = 0, tie = 0;
                for (int start = 0; start < k; start += Block)
                {
                    double max = 0, weights = 0;
                    for (int i = start; i < Math.Min(k, start + Block); i++)
                    {
                        double x = a[row * k + i], y = w[col * k + i];
                        sum += x * y;
                        magnitude += Math.Abs(x * y);
                        max = Math.Max(max, Math.Abs(x));
                        weights += Math.Abs(y);
                    }
                    step += max / 127 / 2 * weights;
                    magnitude += max / 127 * weights; // a quantized term may be off by up to one step
                    for (int i = start; i < Math.Min(k, start + Block) && max > 0; i++)
                    {
                        // a / scale_a in float32 carries a relative error of a few epsilon: within 4e-6 of x.5 it may round either way.
                        double v = Math.Abs(a[row * k + i]) / (max / 127);
                        if (Math.Abs(v - Math.Floor(v) - 0.5) < 4e-6 * Math.Max(v, 1)) tie += max / 127 * Math.Abs(w[col * k + i]);
                    }
                }
                product[row * n + col] = sum;
                bound[row * n + col] = step;
                terms[row * n + col] = magnitude;
                ties[row * n + col] = tie;
            }
        return (product, bound, terms, ties);
    }
}
