using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Onnx;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>The new families' synth checkpoints (Hugging Face layout): a missing or mis-shaped tensor is refused
/// naming the tensor and both shapes, before anything is written.</summary>
public class NewFamilyNameMapTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("family-names");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    [TestCase("phi3-tiny", "model.layers.0.self_attn.qkv_proj.weight", "tensor 'model.layers.0.self_attn.qkv_proj.weight' has shape [64, 64], expected [128, 64]")]
    [TestCase("phi3-tiny", "model.layers.1.mlp.gate_up_proj.weight", "tensor 'model.layers.1.mlp.gate_up_proj.weight' has shape [172, 64], expected [344, 64]")]
    [TestCase("qwen3-tiny", "model.layers.1.self_attn.k_norm.weight", "tensor 'model.layers.1.self_attn.k_norm.weight' has shape [16], expected [32]")]
    [TestCase("gemma2-tiny", "model.layers.0.post_feedforward_layernorm.weight", "tensor 'model.layers.0.post_feedforward_layernorm.weight' has shape [32], expected [64]")]
    [TestCase("gemma3-tiny", "model.layers.0.self_attn.q_norm.weight", "tensor 'model.layers.0.self_attn.q_norm.weight' has shape [16], expected [32]")]
    [TestCase("granite-tiny", "model.layers.0.self_attn.k_proj.weight", "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [16, 64], expected [32, 64]")]
    [TestCase("olmo2-tiny", "model.layers.0.self_attn.k_norm.weight", "tensor 'model.layers.0.self_attn.k_norm.weight' has shape [32], expected [64]")]
    [TestCase("smollm3-tiny", "model.layers.3.self_attn.q_proj.weight", "tensor 'model.layers.3.self_attn.q_proj.weight' has shape [32, 64], expected [64, 64]")]
    [TestCase("phi2-tiny", "model.layers.1.self_attn.dense.weight", "tensor 'model.layers.1.self_attn.dense.weight' has shape [80, 160], expected [160, 160]")]
    [TestCase("phi2-tiny", "lm_head.bias", "tensor 'lm_head.bias' has shape [256], expected [512]")]
    [TestCase("qwen3-moe-tiny", "model.layers.1.mlp.experts.3.down_proj.weight", "tensor 'model.layers.1.mlp.experts.3.down_proj.weight' has shape [32, 48], expected [64, 48]")]
    [TestCase("qwen3-moe-tiny", "model.layers.0.mlp.up_proj.weight", "tensor 'model.layers.0.mlp.up_proj.weight' has shape [86, 64], expected [172, 64]")]
    [TestCase("gpt-oss-tiny", "model.layers.0.mlp.experts.gate_up_proj", "tensor 'model.layers.0.mlp.experts.gate_up_proj' has shape [2, 64, 128], expected [4, 64, 128]")]
    [TestCase("gpt-oss-tiny", "model.layers.1.self_attn.sinks", "tensor 'model.layers.1.self_attn.sinks' has shape [2], expected [4]")]
    [TestCase("gemma-tiny", "model.layers.0.self_attn.k_proj.weight", "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [16, 64], expected [32, 64]")]
    [TestCase("starcoder2-tiny", "model.layers.1.mlp.c_fc.weight", "tensor 'model.layers.1.mlp.c_fc.weight' has shape [128, 64], expected [256, 64]")]
    [TestCase("starcoder2-tiny", "model.layers.0.post_attention_layernorm.bias", "tensor 'model.layers.0.post_attention_layernorm.bias' has shape [32], expected [64]")]
    public void A_misshaped_tensor_names_the_tensor_and_both_shapes(string preset, string tensor, string problem)
    {
        string folder = Path.Combine(_root, preset);
        SynthPresets.Write(preset, 1, folder);
        // The tensor cut to its first rows (a fused projection stored unfused; a norm of the wrong width).
        Rewrite(folder, name => name == tensor);
        string outDir = Path.Combine(_root, "out");
        var error = Assert.Throws<WeightMismatchException>(() =>
        {
            using var checkpoint = Checkpoint.Open(folder);
            ModelFolderWriter.Write(outDir, checkpoint, new Modeling.ExportOptions());
        })!;
        Assert.That(error.Message, Does.EndWith(problem));
        Assert.That(Directory.Exists(outDir) ? Directory.GetFiles(outDir) : [], Is.Empty, "nothing is written for a refused checkpoint");
    }

    [TestCase("gemma2-tiny", "model.layers.1.pre_feedforward_layernorm.weight", "missing tensor 'model.layers.1.pre_feedforward_layernorm.weight' (expected shape [64])")]
    [TestCase("qwen3-tiny", "model.layers.0.self_attn.q_norm.weight", "missing tensor 'model.layers.0.self_attn.q_norm.weight' (expected shape [32])")]
    [TestCase("olmo2-tiny", "model.layers.1.post_feedforward_layernorm.weight", "missing tensor 'model.layers.1.post_feedforward_layernorm.weight' (expected shape [64])")]
    [TestCase("gemma3-tiny", "model.layers.5.self_attn.k_norm.weight", "missing tensor 'model.layers.5.self_attn.k_norm.weight' (expected shape [32])")]
    [TestCase("qwen3-moe-tiny", "model.layers.1.mlp.gate.weight", "missing tensor 'model.layers.1.mlp.gate.weight' (expected shape [4, 64])")]
    [TestCase("gpt-oss-tiny", "model.layers.1.mlp.router.bias", "missing tensor 'model.layers.1.mlp.router.bias' (expected shape [4])")]
    [TestCase("gemma-tiny", "model.layers.1.post_attention_layernorm.weight", "missing tensor 'model.layers.1.post_attention_layernorm.weight' (expected shape [64])")]
    [TestCase("starcoder2-tiny", "model.norm.bias", "missing tensor 'model.norm.bias' (expected shape [64])")]
    [TestCase("starcoder2-tiny", "model.layers.1.self_attn.o_proj.bias", "missing tensor 'model.layers.1.self_attn.o_proj.bias' (expected shape [64])")]
    public void A_missing_tensor_is_named_with_its_shape(string preset, string tensor, string problem)
    {
        string folder = Path.Combine(_root, preset);
        SynthPresets.Write(preset, 1, folder);
        Rewrite(folder, _ => false, drop: tensor);
        var error = Assert.Throws<WeightMismatchException>(() =>
        {
            using var checkpoint = Checkpoint.Open(folder);
            ModelFolderWriter.Write(Path.Combine(_root, "out"), checkpoint, new Modeling.ExportOptions());
        })!;
        Assert.That(error.Message, Does.EndWith(problem));
    }

    /// <summary>Rewrites model.safetensors with the tensors <paramref name="halve"/> picks cut to half their rows, and <paramref name="drop"/> left out.</summary>
    private static void Rewrite(string folder, Func<string, bool> halve, string? drop = null)
    {
        var tensors = new List<(string, ITensorSource)>();
        using (var file = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
            foreach (var name in file.Entries.Keys.Order(StringComparer.Ordinal))
            {
                if (name == drop) continue;
                long[] shape = [.. file.Entries[name].Shape];
                var values = Modeling.TensorTransforms.ReadFloats(file.Tensor(name));
                if (halve(name))
                {
                    shape[0] /= 2;
                    values = values[..(int)(values.Length / 2)];
                }
                tensors.Add((name, TensorData.From<float>(values, shape)));
            }
        SafeTensorsWriter.Write(Path.Combine(folder, "model.safetensors"), tensors);
    }
}
