using System.Text.Json;
using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Quantization;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// `compare`'s mean KL divergence against one computed here, by a different route: each export run
/// token by token through a DecoderSession (KV cache, one step per position, not compare's single
/// prefill), and KL(P || Q) summed in a plain loop over both softmaxes. The quantized exports compute
/// in fp32 (accuracy level 0): at level 4 ONNX Runtime quantizes activations per run, and a prefill
/// row and a decode step then differ enough to move the mean KL by a few percent.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class CompareKlDivergenceTests
{
    private static string Quantized(int bits)
    {
        string folder = Path.Combine(Fixtures.Root, $"stories260k-int{bits}-kl");
        if (!File.Exists(Path.Combine(folder, "model.onnx")))
            ModelFolderWriter.Export(Exporters.Tests.Stories260K.LegacyCheckpoint, Exporters.Tests.Stories260K.Tokenizer, folder,
                new ExportOptions { Lowering = Lowering.Ort, Quantization = new QuantizationOptions { Bits = bits, AccuracyLevel = 0 } });
        return folder;
    }

    /// <summary>Next-token probabilities after each prefix of <paramref name="ids"/>, one decode step at a time: [positions][vocab].</summary>
    private static double[][] StepByStepProbabilities(string folder, long[] ids)
    {
        using var session = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = ids.Length });
        var rows = new double[ids.Length][];
        for (int t = 0; t < ids.Length; t++)
        {
            var logits = t == 0 ? session.Append(ids.AsSpan(0, 1), 1) : session.Step(ids.AsSpan(t, 1));
            double max = double.MinValue;
            foreach (var l in logits) max = Math.Max(max, l);
            var p = new double[logits.Length];
            double sum = 0;
            for (int v = 0; v < p.Length; v++) sum += p[v] = Math.Exp(logits[v] - max);
            for (int v = 0; v < p.Length; v++) p[v] /= sum;
            rows[t] = p;
        }
        return rows;
    }

    private static double PlainMeanKl(double[][] p, double[][] q)
    {
        double total = 0;
        for (int t = 0; t < p.Length; t++)
        {
            double kl = 0;
            for (int v = 0; v < p[t].Length; v++)
                if (p[t][v] > 0) kl += p[t][v] * Math.Log(p[t][v] / q[t][v]);
            total += kl;
        }
        return total / p.Length;
    }

    [Test]
    public void Compare_reports_the_mean_kl_divergence_a_step_by_step_plain_loop_finds_for_int8_and_int4()
    {
        string fp32 = Fixtures.Stories(Lowering.Ort);
        string text = Path.Combine(Fixtures.Root, "kl-text.txt");
        File.WriteAllText(text, Exporters.Tests.Stories260K.GoldenText);
        const int positions = 160;
        var tokenizer = TextTokenizer.Load(fp32, 1);
        long[] ids = [.. tokenizer.Encode(Exporters.Tests.Stories260K.GoldenText, addBos: true).Take(positions + 1).Select(i => (long)i)];
        var reference = StepByStepProbabilities(fp32, ids);
        var measured = new Dictionary<int, double>();
        foreach (int bits in new[] { 8, 4 })
        {
            string model = Quantized(bits);
            var run = OnnxDecoderCli.Run("compare", "--reference", fp32, "--model", model, "--text", text, "--positions", positions.ToString(), "--format", "json");
            Assert.That(run.ExitCode, Is.Zero, run.Stderr);
            using var output = JsonDocument.Parse(run.Stdout);
            Assert.That(output.RootElement.GetProperty("positions").GetInt32(), Is.EqualTo(ids.Length));
            double reported = output.RootElement.GetProperty("mean_kl_divergence").GetDouble();
            double expected = PlainMeanKl(reference, StepByStepProbabilities(model, ids));
            TestContext.Out.WriteLine($"stories260K int{bits} vs fp32 over {ids.Length} positions: compare {reported:G6}, step-by-step plain loop {expected:G6}");
            Assert.That(expected, Is.GreaterThan(0), "quantization moves the distribution");
            Assert.That(reported, Is.EqualTo(expected).Within(0.1).Percent);
            Assert.That(output.RootElement.GetProperty("largest_kl_divergence").GetDouble(), Is.GreaterThanOrEqualTo(reported));
            measured[bits] = reported;
        }
        Assert.That(measured[4], Is.GreaterThan(measured[8]), "int4 is further from fp32 than int8");
        var same = OnnxDecoderCli.Run("compare", "--reference", fp32, "--model", fp32, "--text", text, "--positions", "32", "--format", "json");
        Assert.That(same.ExitCode, Is.Zero, same.Stderr);
        using var self = JsonDocument.Parse(same.Stdout);
        Assert.That(self.RootElement.GetProperty("mean_kl_divergence").GetDouble(), Is.EqualTo(0).Within(1e-9));
    }
}
