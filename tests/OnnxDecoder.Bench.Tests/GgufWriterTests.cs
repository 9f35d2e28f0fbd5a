using System.Runtime.InteropServices;
using OnnxDecoder.Bench;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Gguf;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Bench.Tests;

/// <summary>
/// The GGUF files the benchmark hands llama.cpp hold the very model we export: read back by the
/// exporters' GGUF reader tensor for tensor, and run by llama.cpp itself, whose greedy text on
/// stories260K must be llama2.c's and whose logits must match our fp32 export's.
/// </summary>
[NonParallelizable]
public class GgufWriterTests
{
    private string _folder = "";

    [SetUp]
    public void SetUp() => _folder = TestPaths.NewTempFolder("gguf-writer");

    [TearDown]
    public void TearDown() => Directory.Delete(_folder, recursive: true);

    private static float[] Floats(ITensorSource source)
    {
        using var stream = new MemoryStream();
        source.WriteTo(stream);
        return MemoryMarshal.Cast<byte, float>(stream.ToArray().AsSpan()).ToArray();
    }

    private string WriteStories(GgmlType type)
    {
        using var checkpoint = Checkpoint.Open(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer);
        string path = Path.Combine(_folder, $"stories-{type}.gguf");
        GgufWriter.Write(path, checkpoint, type, GgufWriter.VocabularyOf(Stories260K.Tokenizer, checkpoint.Config.VocabSize));
        return path;
    }

    [Test]
    public void F32FileReadsBackAsTheSameTensorsAndConfig()
    {
        string path = WriteStories(GgmlType.F32);
        using var source = Checkpoint.Open(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer);
        using var written = Checkpoint.Open(path);
        Assert.That(written.Format, Is.EqualTo("gguf"));
        var (a, b) = (source.Config, written.Config);
        Assert.That((b.HiddenSize, b.IntermediateSize, b.NumLayers, b.NumHeads, b.NumKvHeads, b.VocabSize, b.MaxPositions, b.TieWordEmbeddings),
            Is.EqualTo((a.HiddenSize, a.IntermediateSize, a.NumLayers, a.NumHeads, a.NumKvHeads, a.VocabSize, a.MaxPositions, a.TieWordEmbeddings)));
        Assert.That(b.NormEps, Is.EqualTo(a.NormEps).Within(1e-9));
        Assert.That(written.Weights.Names, Is.EquivalentTo(source.Weights.Names));
        foreach (var name in source.Weights.Names)
            Assert.That(Floats(written.Weights.Get(name)), Is.EqualTo(Floats(source.Weights.Get(name))), name);
    }

    [TestCase(GgmlType.Q8_0, 127)]
    [TestCase(GgmlType.Q4_0, 8)]
    public void QuantizedBlocksStayWithinHalfAStepOfTheWeights(GgmlType type, int levels)
    {
        string path = WriteStories(type);
        using var source = Checkpoint.Open(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer);
        using var gguf = GgufFile.Open(path);
        int quantized = 0;
        foreach (var (ggufName, name, _) in Modeling.Families.FamilyRegistry.For(source.Config).GgufNames(source.Config))
        {
            if (!gguf.Tensors.TryGetValue(ggufName, out var tensor)) continue;
            var expected = Floats(source.Weights.Get(name));
            var actual = Floats(gguf.Tensor(ggufName));
            if (tensor.Type == GgmlType.F32) { Assert.That(actual, Is.EqualTo(expected), ggufName); continue; }
            if (tensor.Type == GgmlType.F16)
            {
                // Rows not a multiple of the 32-wide block (stories260K's 172-wide ffn_down) stay F16.
                Assert.That(tensor.Shape[^1] % 32, Is.Not.Zero, ggufName);
                for (int i = 0; i < expected.Length; i++) Assert.That(actual[i], Is.EqualTo(expected[i]).Within(Math.Abs(expected[i]) * 1e-3 + 1e-7), ggufName);
                continue;
            }
            Assert.That(tensor.Type, Is.EqualTo(type), ggufName);
            quantized++;
            for (int block = 0; block < expected.Length / 32; block++)
            {
                var x = expected.AsSpan(block * 32, 32);
                float amax = 0;
                foreach (float v in x) amax = Math.Max(amax, Math.Abs(v));
                // Half a quantization step, plus the scale's fp16 rounding over the largest level. Q4_0's levels
                // run -8..7 steps with the largest magnitude at -8: on the other side values past 7.5 steps clamp to 7.
                float step = amax / levels, slop = amax * 1e-3f + 1e-7f;
                for (int i = 0; i < 32; i++)
                {
                    float tolerance = (type == GgmlType.Q4_0 ? Math.Max(step / 2, Math.Abs(x[i]) - 7 * step) : step / 2) + slop;
                    Assert.That(actual[block * 32 + i], Is.EqualTo(x[i]).Within(tolerance), $"{ggufName} block {block} element {i}");
                }
            }
        }
        Assert.That(quantized, Is.GreaterThan(10), "most 2-D weights are quantized");
    }

    [Test]
    public void LlamaCppOnTheF32FileWritesLlama2cGreedyText()
    {
        string path = WriteStories(GgmlType.F32);
        var (prompt, generated) = Stories260K.Golden();
        int steps = Math.Min(generated.Length, 120);
        using var llama = new LlamaCppPeer("llama.cpp", path, contextLength: 512, batchTokens: 512, threads: 1, eosTokenIds: []);
        // Greedy through teacher-forced logits: row i is llama.cpp's prediction after tokens[0..i].
        var tokens = prompt.Concat(generated.Take(steps)).ToArray();
        var logits = llama.TeacherForcedLogits(tokens);
        var picks = Enumerable.Range(prompt.Length - 1, steps).Select(i => ArgMax(logits[i])).ToArray();
        Assert.That(picks, Is.EqualTo(generated.Take(steps).ToArray()));
    }

    /// <summary>A Hugging Face layout checkpoint (half-split rotary pairs): the writer's permutation to GGUF's interleaved layout.</summary>
    [Test]
    public void LlamaCppOnAHalfSplitCheckpointMatchesOurFp32Export()
    {
        string checkpointFolder = Path.Combine(_folder, "synth");
        SynthPresets.Write("llama-tiny", 3, checkpointFolder);
        using var checkpoint = Checkpoint.Open(checkpointFolder);
        Assert.That(checkpoint.Config.RotaryLayout, Is.EqualTo(RotaryLayout.HalfSplit));
        string gguf = Path.Combine(_folder, "synth.gguf"), onnx = Path.Combine(_folder, "onnx");
        GgufWriter.Write(gguf, checkpoint, GgmlType.F32, GgufWriter.PlaceholderVocabulary(checkpoint.Config));
        ModelFolderWriter.Write(onnx, checkpoint, new ExportOptions { Lowering = Lowering.Ort });
        var tokens = PeerBenchmark.BenchPrompt(checkpoint.Config.BosTokenId, checkpoint.Config.VocabSize, 40);
        using var ours = new OursPeer("ours", onnx, 64, 1);
        using var llama = new LlamaCppPeer("llama.cpp", gguf, 64, 64, 1, []);
        var reference = ours.TeacherForcedLogits(tokens);
        var theirs = llama.TeacherForcedLogits(tokens);
        Assert.That(Divergence.MeanKl(reference, theirs), Is.LessThan(1e-5));
        Assert.That(Enumerable.Range(0, tokens.Length - 1).Select(i => ArgMax(theirs[i])), Is.EqualTo(Enumerable.Range(0, tokens.Length - 1).Select(i => ArgMax(reference[i]))));
    }

    [Test]
    public void KlDivergenceIsZeroForEqualRowsAndMatchesTheDefinition()
    {
        float[] p = [1, 2, 3], q = [3, 2, 1];
        Assert.That(Divergence.Kl(p, p), Is.EqualTo(0).Within(1e-12));
        // By hand: softmax([1,2,3]) = e^x / (e + e^2 + e^3); KL = sum p_i (log p_i - log q_i), log p_i - log q_i = x_i - y_i here.
        double z = Math.E + Math.Exp(2) + Math.Exp(3);
        double expected = (Math.E * (1 - 3) + Math.Exp(3) * (3 - 1)) / z;
        Assert.That(Divergence.Kl(p, q), Is.EqualTo(expected).Within(1e-9));
    }

    private static int ArgMax(float[] row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }
}
