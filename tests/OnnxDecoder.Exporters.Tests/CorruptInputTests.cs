using System.Buffers.Binary;
using System.Text;
using OnnxDecoder.Exporters.Gguf;
using OnnxDecoder.Exporters.Llama2c;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Onnx;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>
/// Checkpoints and tokenizers we did not write, broken on purpose: each is refused with a
/// <see cref="ModelFormatException"/> whose message starts with the file and names the problem.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class CorruptInputTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("corrupt");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    private string Copy(string source, string name)
    {
        string path = Path.Combine(_root, name);
        File.Copy(source, path, overwrite: true);
        return path;
    }

    private static void Patch(string path, long offset, byte[] bytes)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write);
        file.Position = offset;
        file.Write(bytes);
    }

    private static byte[] I32(int v) { var b = new byte[4]; BinaryPrimitives.WriteInt32LittleEndian(b, v); return b; }

    private static void AssertRefused(Action open, string path, string problem) => Refusals.AssertRefused(open, path, problem);

    // ---- llama2.c checkpoints --------------------------------------------------------------------

    // Legacy header: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len (int32 each).
    [TestCase(0, 0, "header field dim (0) must be between 1 and 65536")]
    [TestCase(0, -5, "header field dim (-5) must be between 1 and 65536")]
    [TestCase(12, 9, "header field dim (64) must be divisible by n_heads (9)")]
    [TestCase(16, 3, "header field n_kv_heads (3) must divide n_heads (8)")]
    [TestCase(24, 1 << 30, "header field seq_len (1073741824) must be between 1 and 1048576")]
    [TestCase(20, 1 << 22, "header field vocab_size (4194304) must be between 1 and 2097152")]
    [TestCase(4, 0x7fffffff, "header field hidden_dim (2147483647) must be between 1 and 262144")]
    public void Llama2c_header_fields_out_of_range(int offset, int value, string problem)
    {
        string path = Copy(Stories260K.LegacyCheckpoint, "bad.bin");
        Patch(path, offset, I32(value));
        AssertRefused(() => Llama2cCheckpoint.Open(path).Dispose(), path, problem);
    }

    [Test]
    public void Llama2c_truncated_trailing_tiny_and_wrong_version()
    {
        string path = Copy(Stories260K.LegacyCheckpoint, "truncated.bin");
        using (var f = new FileStream(path, FileMode.Open)) f.SetLength(f.Length - 100);
        AssertRefused(() => Llama2cCheckpoint.Open(path).Dispose(), path, "file is truncated: the header needs 1056540 bytes, the file has 1056440");

        path = Copy(Stories260K.LegacyCheckpoint, "trailing.bin");
        using (var f = new FileStream(path, FileMode.Append)) f.Write(new byte[12]);
        AssertRefused(() => Llama2cCheckpoint.Open(path).Dispose(), path, "file has 12 unexpected trailing bytes");

        path = Path.Combine(_root, "tiny.bin");
        File.WriteAllBytes(path, new byte[10]);
        AssertRefused(() => Llama2cCheckpoint.Open(path).Dispose(), path, "shorter than a llama2.c header");

        path = Copy(Stories260K.Version1Checkpoint, "v2.bin");
        Patch(path, 4, I32(2));
        AssertRefused(() => Llama2cCheckpoint.Open(path).Dispose(), path, "llama2.c checkpoint version 2 is not supported");

        path = Copy(Stories260K.Version1Checkpoint, "shared.bin");
        Patch(path, 36, [7]);
        AssertRefused(() => Llama2cCheckpoint.Open(path).Dispose(), path, "shared_classifier (7) must be 0 or 1");
    }

    [Test]
    public void Llama2c_tokenizer_truncated_lying_lengths_and_trailing_bytes()
    {
        string path = Copy(Stories260K.Tokenizer, "tok-trunc.bin");
        using (var f = new FileStream(path, FileMode.Open)) f.SetLength(f.Length - 20);
        AssertRefused(() => Llama2cTokenizer.Read(path, 512), path, "file ends inside entry");

        path = Copy(Stories260K.Tokenizer, "tok-len.bin");
        Patch(path, 4 + 4, I32(1 << 30)); // entry 0's byte length
        AssertRefused(() => Llama2cTokenizer.Read(path, 512), path, "entry 0 has length 1073741824");

        path = Copy(Stories260K.Tokenizer, "tok-max.bin");
        Patch(path, 0, I32(-1));
        AssertRefused(() => Llama2cTokenizer.Read(path, 512), path, "max_token_length (-1) must be between 1 and 4096");

        path = Copy(Stories260K.Tokenizer, "tok-extra.bin");
        using (var f = new FileStream(path, FileMode.Append)) f.Write(new byte[3]);
        AssertRefused(() => Llama2cTokenizer.Read(path, 512), path, "has 3 bytes after the 512 entries");

        AssertRefused(() => Llama2cTokenizer.Read(Stories260K.Tokenizer, 600), Stories260K.Tokenizer, "file ends inside entry 512 of 600");
    }

    // ---- safetensors ------------------------------------------------------------------------------

    private static string SafeTensors(string path, string header, int dataBytes, ulong? lengthOverride = null)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, lengthOverride ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, 1UL << 62, "header length 4611686018427387904 is outside")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, 4000UL, "header length 4000 runs past the end of the file")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]""", 8, null, "header is not valid JSON")]
    [TestCase("""{"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}""", 2, null, "tensor 'a' has dtype 'I8', which is not supported")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4, null, "tensor data needs 8 bytes but the file holds 4 after the header (truncated?)")]
    [TestCase("""{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8, null, "tensor 'a' spans 8 bytes but shape [3] of F32 needs 12")]
    [TestCase("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, null, "tensor 'b' starts at 8, leaving a gap after byte 4")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, null, "overlaps the tensor before it")]
    [TestCase("""{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 8, null, "tensor 'a' has an invalid dimension -2")]
    [TestCase("""{"a":{"dtype":"F32","shape":[4398046511105,4398046511105],"data_offsets":[0,8]}}""", 8, null, "shape [4398046511105, 4398046511105] overflows")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 12, null, "the file has 4 bytes after the last tensor")]
    [TestCase("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 8, null, "tensor 'a' has invalid data_offsets [8, 0]")]
    public void Safetensors_headers_that_lie(string header, int dataBytes, ulong? lengthOverride, string problem)
    {
        string path = SafeTensors(Path.Combine(_root, "bad.safetensors"), header, dataBytes, lengthOverride);
        AssertRefused(() => SafeTensorsFile.Open(path).Dispose(), path, problem);
    }

    // ---- Hugging Face folders and name maps ---------------------------------------------------------

    private string SynthFolder()
    {
        string folder = Path.Combine(_root, "hf");
        SynthPresets.Write("llama-tiny", 1, folder);
        return folder;
    }

    [Test]
    public void Hugging_face_folder_without_config_or_with_an_escaping_shard()
    {
        string folder = SynthFolder();
        string config = Path.Combine(folder, "config.json");
        File.Move(config, config + ".off");
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), folder, "config.json is missing");
        File.Move(config + ".off", config);

        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), """{"weight_map": {"model.norm.weight": "../model.safetensors"}}""");
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), Path.Combine(folder, "model.safetensors.index.json"), "shard '../model.safetensors' (listed for tensor 'model.norm.weight') must be a plain file name inside the model folder");
    }

    private static void RewriteWith(string folder, Func<List<(string Name, ITensorSource Tensor)>, List<(string Name, ITensorSource Tensor)>> change)
    {
        var tensors = new List<(string, ITensorSource)>();
        using (var file = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
            foreach (var name in file.Entries.Keys.Order(StringComparer.Ordinal))
                tensors.Add((name, TensorData.From<float>(Modeling.TensorTransforms.ReadFloats(file.Tensor(name)), [.. file.Entries[name].Shape])));
        SafeTensorsWriter.Write(Path.Combine(folder, "model.safetensors"), change(tensors));
    }

    [Test]
    public void Missing_misshaped_and_extra_tensors_name_the_tensor_and_both_shapes()
    {
        string folder = SynthFolder();
        var outDir = Path.Combine(_root, "out");
        void Export()
        {
            using var checkpoint = Checkpoint.Open(folder);
            ModelFolderWriter.Write(outDir, checkpoint, new Modeling.ExportOptions());
        }

        RewriteWith(folder, t => t.Where(x => x.Name != "model.layers.1.mlp.up_proj.weight").ToList());
        var error = Assert.Throws<WeightMismatchException>(Export)!;
        Assert.That(error.Message, Does.EndWith("missing tensor 'model.layers.1.mlp.up_proj.weight' (expected shape [172, 64])"));

        folder = SynthFolder();
        RewriteWith(folder, t => t.Select(x => x.Name == "model.norm.weight" ? (x.Name, TensorData.From<float>(new float[32], 32)) : x).ToList());
        error = Assert.Throws<WeightMismatchException>(Export)!;
        Assert.That(error.Message, Does.EndWith("tensor 'model.norm.weight' has shape [32], expected [64]"));

        folder = SynthFolder();
        RewriteWith(folder, t => [.. t, ("model.layers.0.self_attn.q_norm.weight", TensorData.From<float>(new float[16], 16))]);
        error = Assert.Throws<WeightMismatchException>(Export)!;
        Assert.That(error.Message, Does.Contain("unexpected tensor 'model.layers.0.self_attn.q_norm.weight' with shape [16]"));
        Assert.That(Directory.Exists(outDir) ? Directory.GetFiles(outDir) : [], Is.Empty, "nothing is written for a refused checkpoint");
    }

    // ---- GGUF ---------------------------------------------------------------------------------

    private static (string Key, uint Type, byte[] Value)[] LlamaMetadata() =>
    [
        ("general.architecture", 8, GgufTestWriter.Str("llama")),
        ("llama.embedding_length", 4, GgufTestWriter.U32(64)),
    ];

    private string Gguf(string name, IReadOnlyList<(string, uint, byte[])> metadata, IReadOnlyList<(string, long[], uint, byte[])> tensors)
    {
        string path = Path.Combine(_root, name);
        GgufTestWriter.WriteFile(path, metadata, tensors);
        return path;
    }

    [Test]
    public void Gguf_magic_version_and_counts()
    {
        string path = Gguf("ok.gguf", LlamaMetadata(), [("t", [2, 32], 0u, new byte[256])]);
        using (var ok = GgufFile.Open(path)) Assert.That(ok.Tensors["t"].Shape, Is.EqualTo(new long[] { 2, 32 }));

        string bad = Copy(path, "magic.gguf");
        Patch(bad, 0, Encoding.ASCII.GetBytes("GGUG"));
        AssertRefused(() => GgufFile.Open(bad).Dispose(), bad, "not a GGUF file (wrong magic)");

        bad = Copy(path, "version.gguf");
        Patch(bad, 4, GgufTestWriter.U32(2));
        AssertRefused(() => GgufFile.Open(bad).Dispose(), bad, "GGUF version 2 is not supported");

        bad = Copy(path, "count.gguf");
        Patch(bad, 8, GgufTestWriter.U64(1UL << 40));
        AssertRefused(() => GgufFile.Open(bad).Dispose(), bad, "tensor count 1099511627776 exceeds the cap");
    }

    [Test]
    public void Gguf_dimensions_that_overflow_or_data_past_the_end()
    {
        long huge = (1L << 42) + 1;
        string path = Gguf("overflow.gguf", LlamaMetadata(), [("t", [huge, huge, 32], 0u, new byte[128])]);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "overflows");

        path = Gguf("past-end.gguf", LlamaMetadata(), [("t", [64, 32], 0u, new byte[128])]);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "tensor 't' data (offset 0, 8192 bytes) runs past the end of the file");

        path = Gguf("type.gguf", LlamaMetadata(), [("t", [1, 32], 99u, new byte[128])]);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "tensor 't' has ggml type 99, which is not supported");

        path = Gguf("blocks.gguf", LlamaMetadata(), [("t", [2, 33], 8u, new byte[256])]);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "rows of 33 are not a multiple of Q8_0's block of 32");
    }

    [Test]
    public void Gguf_metadata_that_lies()
    {
        string path = Gguf("align.gguf", [.. LlamaMetadata(), ("general.alignment", 4, GgufTestWriter.U32(3))], []);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "general.alignment (3) must be a power of two");

        path = Gguf("string.gguf", [("general.architecture", 8, [.. GgufTestWriter.U64(1UL << 40), .. "llama"u8.ToArray()])], []);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "string length 1099511627776 exceeds the");

        path = Gguf("array-type.gguf", [("tokenizer.ggml.tokens", 9, [.. GgufTestWriter.U32(13), .. GgufTestWriter.U64(1)])], []);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "array element type 13 is not valid");

        path = Gguf("array-len.gguf", [("tokenizer.ggml.scores", 9, [.. GgufTestWriter.U32(6), .. GgufTestWriter.U64(1UL << 23)])], []);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "array of 8388608 elements cannot fit in the rest of the file");

        path = Gguf("duplicate.gguf", [.. LlamaMetadata(), ("llama.embedding_length", 4, GgufTestWriter.U32(64))], []);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "metadata key 'llama.embedding_length' appears twice");

        path = Gguf("arch.gguf", [("general.architecture", 8, GgufTestWriter.Str("mamba"))], [("token_embd.weight", [4, 32], 0u, new byte[512])]);
        AssertRefused(() => Checkpoint.Open(path).Dispose(), path, "general.architecture 'mamba' is not supported");
        // llama.cpp's gemma and starcoder2 GGUFs: the families read Hugging Face checkpoints only (llama.cpp stores Gemma's
        // norms as 1 + w and names its own tokenizers), and the refusal says so.
        foreach (var arch in new[] { "gemma", "starcoder2" })
        {
            path = Gguf($"{arch}.gguf", [("general.architecture", 8, GgufTestWriter.Str(arch))], [("token_embd.weight", [4, 32], 0u, new byte[512])]);
            AssertRefused(() => Checkpoint.Open(path).Dispose(), path,
                $"general.architecture '{arch}' is not supported (llama, including llama-architecture mixtures of experts): export the model's Hugging Face checkpoint");
        }
    }

    // ---- the command line --------------------------------------------------------------------------

    [Test]
    public void The_cli_prints_one_line_naming_the_file_and_exits_non_zero()
    {
        string path = Copy(Stories260K.LegacyCheckpoint, "cli.bin");
        using (var f = new FileStream(path, FileMode.Open)) f.SetLength(1000);
        var (exitCode, _, stderr) = OnnxDecoderCli.Run("export", "--checkpoint", path, "--out", Path.Combine(_root, "cli-out"));

        Assert.That(exitCode, Is.EqualTo(1));
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(stderr, Does.StartWith($"onnx-decoder: {path}: file is truncated"));
    }

    [TestCase("--model", "/nowhere/at/all", "--port", "8080", "onnx-decoder: /nowhere/at/all: model folder not found")]
    [TestCase("--model", "MODEL", "--port", "99999", "onnx-decoder: --port 99999 is not a TCP port")]
    public void Serve_refuses_bad_arguments_in_one_line(string modelFlag, string model, string portFlag, string port, string message)
    {
        string folder = Path.Combine(_root, "serve-model");
        if (model == "MODEL" && !Directory.Exists(folder)) ModelFolderWriter.Export(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, folder, new OnnxDecoder.Modeling.ExportOptions());
        var (exitCode, _, stderr) = OnnxDecoderCli.Run("serve", modelFlag, model == "MODEL" ? folder : model, portFlag, port);
        Assert.That(exitCode, Is.EqualTo(1));
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
        Assert.That(stderr, Does.StartWith(message));
    }
}
