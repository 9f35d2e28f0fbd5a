using System.Text.Json.Nodes;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Onnx;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>
/// GPT-OSS checkpoints whose experts are MXFP4 (*_blocks / *_scales with quantization_config mxfp4). The independent
/// decoder is llama.cpp's ggml (dequantize_row_mxfp4, from the LLamaSharp.Backend.Cpu package): ONNX Runtime 1.31.1's CPU
/// provider has no FLOAT4E2M1 Cast or DequantizeLinear kernel, and Debian's onnx 1.12 has no FLOAT4E2M1 type.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class Mxfp4ExpertsTests
{
    private const string Preset = "gpt-oss-tiny";
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("mxfp4");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    /// <summary>llama.cpp's MXFP4 row decoder (ggml-quants.c): 17-byte blocks {e8m0 exponent, 16 bytes of e2m1 pairs}.</summary>
    private delegate void DequantizeRowMxfp4(byte[] blocks, float[] values, long count);

    private static readonly Lazy<DequantizeRowMxfp4> Ggml = new(() =>
    {
        string path = typeof(Mxfp4ExpertsTests).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .Cast<System.Reflection.AssemblyMetadataAttribute>().Single(a => a.Key == "GgmlBaseLibrary").Value!;
        if (!File.Exists(path)) Assert.Fail($"{path} is missing: restore the LLamaSharp.Backend.Cpu package (dotnet restore)");
        var library = System.Runtime.InteropServices.NativeLibrary.Load(path);
        return System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer<DequantizeRowMxfp4>(
            System.Runtime.InteropServices.NativeLibrary.GetExport(library, "dequantize_row_mxfp4"));
    });

    /// <summary>
    /// The reference dequantization of one blocks / scales pair, float [experts, in, out]: ggml decodes the values, and
    /// the layout is transformers' convert_moe_packed_tensors, written out. ggml puts a block's low nibbles at its
    /// elements 0..15 and its high nibbles at 16..31, where transformers' byte j holds elements 2j (low) and 2j + 1 (high).
    /// </summary>
    private static float[] ReferenceDequantized(byte[] blocks, byte[] scales, long experts, long rows, long groups)
    {
        int count = scales.Length;
        var ggmlBlocks = new byte[17 * count];
        for (int b = 0; b < count; b++)
        {
            ggmlBlocks[17 * b] = scales[b];
            Array.Copy(blocks, 16 * b, ggmlBlocks, 17 * b + 1, 16);
        }
        var decoded = new float[32 * count];
        Ggml.Value(ggmlBlocks, decoded, decoded.Length);
        long inputs = groups * 32;
        var result = new float[experts * inputs * rows];
        for (long e = 0; e < experts; e++)
            for (long r = 0; r < rows; r++)
                for (long i = 0; i < inputs; i++)
                {
                    long block = (e * rows + r) * groups + i / 32;
                    int j = (int)(i % 32) / 2;
                    float value = decoded[block * 32 + (i % 2 == 0 ? j : j + 16)];   // [E, out, in] before the transpose
                    result[(e * inputs + i) * rows + r] = value;                        // [E, in, out]
                }
        return result;
    }

    private sealed record Mxfp4Tensor(string Name, byte[] Blocks, byte[] Scales, long Experts, long Rows, long Groups);

    /// <summary>
    /// Writes the synth gpt-oss-tiny checkpoint with its experts replaced by random MXFP4 blocks (every byte value
    /// likely; scales 2^-6 .. 2^-4, a real checkpoint's range) and quantization_config mxfp4 in config.json.
    /// Returns the MXFP4 tensors written.
    /// </summary>
    private List<Mxfp4Tensor> WriteMxfp4Checkpoint(string folder, Func<List<(string, ITensorSource)>, List<(string, ITensorSource)>>? edit = null)
    {
        SynthPresets.Write(Preset, seed: 5, folder);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!.AsObject();
        config["quantization_config"] = JsonNode.Parse("""{"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"}""");
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());

        var random = new Random(11);
        var written = new List<Mxfp4Tensor>();
        var tensors = new List<(string, ITensorSource)>();
        using (var file = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
            foreach (var name in file.Entries.Keys.Order(StringComparer.Ordinal))
            {
                var shape = file.Entries[name].Shape;
                if (!name.EndsWith("experts.gate_up_proj", StringComparison.Ordinal) && !name.EndsWith("experts.down_proj", StringComparison.Ordinal))
                {
                    tensors.Add((name, TensorData.From<float>(Modeling.TensorTransforms.ReadFloats(file.Tensor(name)), shape)));
                    continue;
                }
                long experts = shape[0], inputs = shape[1], rows = shape[2], groups = inputs / 32;   // stored [experts, in, out]
                var blocks = new byte[experts * rows * groups * 16];
                var scales = new byte[experts * rows * groups];
                random.NextBytes(blocks);
                for (int i = 0; i < scales.Length; i++) scales[i] = (byte)(127 - 6 + random.Next(3));
                written.Add(new Mxfp4Tensor(name, blocks, scales, experts, rows, groups));
                tensors.Add((name + "_blocks", TensorData.FromBytes(ElementType.UInt8, blocks, experts, rows, groups, 16)));
                tensors.Add((name + "_scales", TensorData.FromBytes(ElementType.UInt8, scales, experts, rows, groups)));
            }
        SafeTensorsWriter.Write(Path.Combine(folder, "model.safetensors"), edit is null ? tensors : edit(tensors));
        return written;
    }

    [Test]
    public void The_dequantized_experts_equal_llama_cpps_decoding_in_transformers_layout_exactly()
    {
        string folder = Path.Combine(_root, "hf");
        var written = WriteMxfp4Checkpoint(folder);
        using var checkpoint = Checkpoint.Open(folder);
        Assert.That(written, Has.Count.EqualTo(2 * checkpoint.Config.NumLayers));
        foreach (var t in written)
        {
            var ours = Modeling.TensorTransforms.ReadFloats(checkpoint.Weights.Get(t.Name));
            Assert.That(checkpoint.Weights.Get(t.Name).Shape, Is.EqualTo(new[] { t.Experts, t.Groups * 32, t.Rows }), t.Name);
            var theirs = ReferenceDequantized(t.Blocks, t.Scales, t.Experts, t.Rows, t.Groups);
            Assert.That(ours, Is.EqualTo(theirs), t.Name); // exact (ggml's code 8 is +0 where transformers' is -0: equal as numbers)
            Assert.That(ours.Distinct().Count(), Is.GreaterThanOrEqualTo(20), "the codes and scales vary (23 distinct values in all)");
            Assert.That(checkpoint.StoredDTypes[t.Name], Is.EqualTo("MXFP4"));
        }
        Assert.That(checkpoint.Weights.Names.Any(n => n.EndsWith("_blocks", StringComparison.Ordinal) || n.EndsWith("_scales", StringComparison.Ordinal)), Is.False);
    }

    [Test]
    public void Every_e2m1_code_in_either_nibble_and_extreme_scales_decode_as_llama_cpp_decodes()
    {
        // Block b holds byte values 16b .. 16b + 15 (all 256 over 16 blocks), each block with its own exponent.
        var blocks = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        byte[] scales = [0, 1, 60, 100, 120, 126, 127, 128, 130, 140, 150, 160, 200, 230, 250, 254];
        var theirs = ReferenceDequantized(blocks, scales, 1, 16, 1);                 // [1, 32, 16]
        Span<float> values = stackalloc float[32];
        for (int b = 0; b < 16; b++)
        {
            Mxfp4Experts.Decode(blocks.AsSpan(16 * b, 16), scales[b], values);
            for (int i = 0; i < 32; i++)
                Assert.That(values[i], Is.EqualTo(theirs[i * 16 + b]), $"block {b}, element {i}");
        }
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void An_mxfp4_checkpoint_exports_to_the_reference_logits_on_the_dequantized_weights(Lowering lowering)
    {
        string folder = Path.Combine(_root, "hf");
        var written = WriteMxfp4Checkpoint(folder);
        var weights = new InMemoryWeights();
        using (var file = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
            foreach (var name in file.Entries.Keys.Where(n => file.Entries[n].DType == "F32"))
                weights.Add(name, Modeling.TensorTransforms.ReadFloats(file.Tensor(name)), file.Entries[name].Shape);
        foreach (var t in written)
            weights.Add(t.Name, ReferenceDequantized(t.Blocks, t.Scales, t.Experts, t.Rows, t.Groups), t.Experts, t.Groups * 32, t.Rows);

        string model = Path.Combine(_root, "model");
        using (var checkpoint = Checkpoint.Open(folder))
            ModelFolderWriter.Write(model, checkpoint, new ExportOptions { Lowering = lowering });

        string configJson = File.ReadAllText(Path.Combine(folder, "config.json"));
        var config = DecoderConfig.FromHuggingFace(configJson);
        const int length = 40; // beyond the sliding window of 32
        var ids = new long[1, length];
        var mask = new long[1, length];
        var positions = new long[1, length];
        var random = new Random(3);
        for (int t = 0; t < length; t++) (ids[0, t], mask[0, t], positions[0, t]) = (random.Next(config.VocabSize), 1, t);
        var expected = new HfReference(configJson, weights).ForwardFloat(ids, mask, positions);

        Assert.That(StepwiseLogits.MaxDifference(model, ids, expected, config.VocabSize), Is.LessThan(1e-4f));
        Assert.That(expected.Max(Math.Abs), Is.GreaterThan(0.1f), "the logits are not trivially small");
    }

    [Test]
    public void An_int4_ort_export_of_an_mxfp4_checkpoint_equals_that_of_its_float_dequantization_with_the_experts_in_QMoE()
    {
        // The same checkpoint twice: MXFP4 experts, and float experts holding llama.cpp's decoding of them. Their int4
        // exports must be the same bytes (QMoE's exactness against its blocks is GptOssTests').
        string mxfp4 = Path.Combine(_root, "hf");
        var written = WriteMxfp4Checkpoint(mxfp4);
        string dequantized = Path.Combine(_root, "hf-float");
        SynthPresets.Write(Preset, seed: 5, dequantized);
        var tensors = new List<(string, ITensorSource)>();
        using (var file = SafeTensorsFile.Open(Path.Combine(dequantized, "model.safetensors")))
            foreach (var name in file.Entries.Keys.Order(StringComparer.Ordinal))
                tensors.Add((name, written.SingleOrDefault(t => t.Name == name) is { } t
                    ? TensorData.From<float>(ReferenceDequantized(t.Blocks, t.Scales, t.Experts, t.Rows, t.Groups), t.Experts, t.Groups * 32, t.Rows)
                    : TensorData.From<float>(Modeling.TensorTransforms.ReadFloats(file.Tensor(name)), file.Entries[name].Shape)));
        SafeTensorsWriter.Write(Path.Combine(dequantized, "model.safetensors"), tensors);

        var options = new ExportOptions { Lowering = Lowering.Ort, Quantization = new Modeling.Quantization.QuantizationOptions { Bits = 4 } };
        foreach (var (source, target) in new[] { (mxfp4, "model-int4"), (dequantized, "model-float-int4") })
            using (var checkpoint = Checkpoint.Open(source))
                ModelFolderWriter.Write(Path.Combine(_root, target), checkpoint, options);
        var graph = Onnx.Proto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(_root, "model-int4", "model.onnx"))).Graph;
        Assert.That(graph.Node.Count(n => n.OpType == "QMoE"), Is.EqualTo(2), "one QMoE per layer");
        Assert.That(graph.Node.Any(n => n.OpType == "MoE"), Is.False);
        Assert.That(File.ReadAllBytes(Path.Combine(_root, "model-int4", "model.onnx.data")),
            Is.EqualTo(File.ReadAllBytes(Path.Combine(_root, "model-float-int4", "model.onnx.data"))), "the same weights, byte for byte");
    }

    [Test]
    public void Scales_that_do_not_pair_with_their_blocks_are_refused_naming_both()
    {
        string folder = Path.Combine(_root, "hf");
        const string scales = "model.layers.1.mlp.experts.down_proj_scales";
        WriteMxfp4Checkpoint(folder, tensors => [.. tensors.Select(t => t.Item1 == scales
            ? (t.Item1, TensorData.FromBytes(ElementType.UInt8, new byte[4 * 64], 4, 64, 1, 1))
            : t)]);
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(folder).Dispose())!;
        Assert.That(error.Message, Does.EndWith($"MXFP4 tensor '{scales}' has shape [4, 64, 1, 1], expected [4, 64, 2] (one scale per block of 'model.layers.1.mlp.experts.down_proj_blocks')"));
    }

    [Test]
    public void Blocks_without_their_scales_are_refused_naming_the_missing_tensor()
    {
        string folder = Path.Combine(_root, "hf");
        WriteMxfp4Checkpoint(folder, tensors => [.. tensors.Where(t => t.Item1 != "model.layers.0.mlp.experts.gate_up_proj_scales")]);
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(folder).Dispose())!;
        Assert.That(error.Message, Does.EndWith("MXFP4 tensor 'model.layers.0.mlp.experts.gate_up_proj_blocks' has no 'model.layers.0.mlp.experts.gate_up_proj_scales' "
            + "beside it: the checkpoint is incomplete (download every shard)"));
    }

    [Test]
    public void Blocks_whose_input_dimension_is_not_the_configs_are_refused_naming_the_tensor_and_both_shapes()
    {
        // One block column per row instead of two: dequantized [4, 32, 128] where the config needs [4, 64, 128].
        string folder = Path.Combine(_root, "hf");
        const string name = "model.layers.0.mlp.experts.gate_up_proj";
        WriteMxfp4Checkpoint(folder, tensors => [.. tensors.Select(t =>
            t.Item1 == name + "_blocks" ? (t.Item1, TensorData.FromBytes(ElementType.UInt8, new byte[4 * 128 * 16], 4, 128, 1, 16))
            : t.Item1 == name + "_scales" ? (t.Item1, TensorData.FromBytes(ElementType.UInt8, new byte[4 * 128], 4, 128, 1))
            : t)]);
        var error = Assert.Throws<WeightMismatchException>(() =>
        {
            using var checkpoint = Checkpoint.Open(folder);
            ModelFolderWriter.Write(Path.Combine(_root, "out"), checkpoint, new ExportOptions());
        })!;
        Assert.That(error.Message, Does.EndWith($"tensor '{name}' has shape [4, 32, 128], expected [4, 64, 128]"));
    }

    [Test]
    public void Byte_tensors_without_an_mxfp4_quantization_config_are_refused()
    {
        string folder = Path.Combine(_root, "hf");
        WriteMxfp4Checkpoint(folder);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!.AsObject();
        config.Remove("quantization_config");
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        var error = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(folder).Dispose())!;
        Assert.That(error.Message, Does.EndWith("tensor 'model.layers.0.mlp.experts.down_proj_blocks' has dtype U8, which only MXFP4 checkpoints' *_blocks / *_scales "
            + "pairs may have (config.json quantization_config.quant_method \"mxfp4\")"));
    }
}
