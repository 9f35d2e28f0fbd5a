using System.Text;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Reliability.Tests;

/// <summary>
/// Crafted bad files not covered elsewhere: tokenizer files, sharded safetensors, NaN and infinite
/// weights, duplicate names, symlinks, and the CLI's `inspect` on a hostile .onnx. (The rest of the
/// corpus: tests/OnnxDecoder.Exporters.Tests/CorruptInputTests, OnnxDecoder.Onnx.Tests/OnnxModelFileTests,
/// OnnxDecoder.Runtime.Tests/SessionTests, OnnxDecoder.Modeling.Tests/ConfigTests.)
/// </summary>
[Parallelizable(ParallelScope.None)]
public class CorpusTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("corpus");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    private static void Refused(Action action, string path, string problem) => Refusals.AssertRefused(action, path, problem);

    private string TokenizerFolder(string name, string file, string content)
    {
        string folder = Path.Combine(_root, name);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, file), content);
        return folder;
    }

    [TestCase("tokenizer.json", "[1, 2, 3]", "has no model object")]
    [TestCase("tokenizer.json", """{"model": {"type": "Unigram", "vocab": []}}""", "model.type 'Unigram' is not supported (only BPE)")]
    [TestCase("tokenizer.json", """{"model": {"type": "BPE", "vocab": {"a": -4}}}""", "model.vocab['a'] is not a valid id")]
    [TestCase("tokenizer.json", """{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}, "pre_tokenizer": {"type": "ByteLevel"}}""", "model.merges entries must be")]
    [TestCase("tokenizer.model", "not a protobuf at all \u0001\u0002", "is not a SentencePiece model this library can run")]
    [TestCase("tokenizer.tiktoken", "!!!notbase64!!! 0\n", "is not a tiktoken rank file")]
    public void Tokenizer_files_that_are_not_what_they_claim(string file, string content, string problem)
    {
        string folder = TokenizerFolder(file.Replace('.', '-'), file, content);
        Refused(() => TextTokenizer.Load(folder, null), Path.Combine(folder, file), problem);
    }

    [Test]
    public void Vocab_and_merges_that_lie()
    {
        string folder = TokenizerFolder("bpe-bad", "vocab.json", """{"a": "zero"}""");
        File.WriteAllText(Path.Combine(folder, "merges.txt"), "#version: 0.2\na b\n");
        Refused(() => TextTokenizer.Load(folder, null), Path.Combine(folder, "vocab.json"), "token 'a' has an invalid id \"zero\"");

        File.WriteAllText(Path.Combine(folder, "vocab.json"), """{"a": 0, "b": 1}""");
        File.WriteAllText(Path.Combine(folder, "merges.txt"), "#version: 0.2\na b c d e\n");
        Refused(() => TextTokenizer.Load(folder, null), Path.Combine(folder, "merges.txt"), "is not a tokenizer this library can run");
    }

    [Test]
    public void An_oversized_tokenizer_file_is_refused_before_it_is_read()
    {
        string folder = Path.Combine(_root, "huge");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "tokenizer.json");
        using (var f = File.Create(path)) f.SetLength(65L << 20); // sparse: 65 MiB of nothing
        Refused(() => TextTokenizer.Load(folder, null), path, "over the 67108864-byte limit for tokenizer files");
    }

    private string Synth()
    {
        string folder = Path.Combine(_root, "synth");
        SynthPresets.Write("llama-tiny", 1, folder);
        return folder;
    }

    [Test]
    public void Sharded_safetensors_with_broken_indexes()
    {
        string folder = Synth();
        string index = Path.Combine(folder, "model.safetensors.index.json");
        File.WriteAllText(index, "{not json");
        Refused(() => Checkpoint.Open(folder).Dispose(), index, "is not valid JSON");
        File.WriteAllText(index, """{"weight_map": []}""");
        Refused(() => Checkpoint.Open(folder).Dispose(), index, "weight_map must be an object");
        File.WriteAllText(index, """{"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}""");
        Refused(() => Checkpoint.Open(folder).Dispose(), index, "shard 'model-00002-of-00002.safetensors' listed for tensor 'model.norm.weight' does not exist");
        File.WriteAllText(index, """{"weight_map": {}}""");
        Refused(() => Checkpoint.Open(folder).Dispose(), index, "weight_map lists no shards");
    }

    [Test]
    public void A_tensor_in_two_shards_and_a_symlinked_shard_are_refused()
    {
        string folder = Synth();
        File.Copy(Path.Combine(folder, "model.safetensors"), Path.Combine(folder, "copy.safetensors"));
        string index = Path.Combine(folder, "model.safetensors.index.json");
        File.WriteAllText(index, """{"weight_map": {"a": "model.safetensors", "b": "copy.safetensors"}}""");
        // Both shards hold every tensor, and the index lists none of them by its real name: the index check names the first.
        Refused(() => Checkpoint.Open(folder).Dispose(), index, "which weight_map does not list");

        string outside = Path.Combine(_root, "outside.safetensors");
        File.Move(Path.Combine(folder, "copy.safetensors"), outside);
        File.CreateSymbolicLink(Path.Combine(folder, "link.safetensors"), outside);
        File.WriteAllText(index, """{"weight_map": {"a": "link.safetensors"}}""");
        Refused(() => Checkpoint.Open(folder).Dispose(), Path.Combine(folder, "link.safetensors"), "is a symbolic link");
    }

    [Test]
    public void Duplicate_tensor_names_in_a_safetensors_header()
    {
        string path = Path.Combine(_root, "dup.safetensors");
        var json = Encoding.UTF8.GetBytes("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)json.Length), .. json, .. new byte[8]]);
        Refused(() => SafeTensorsFile.Open(path).Dispose(), path, "tensor 'a' is listed twice");
    }

    [TestCase(float.NaN, "holds NaN at element 5")]
    [TestCase(float.PositiveInfinity, "holds an infinity at element 5")]
    public void Non_finite_weights_are_flagged_and_nothing_is_written(float bad, string problem)
    {
        string folder = Synth();
        var tensors = new List<(string, ITensorSource)>();
        using (var file = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
            foreach (var name in file.Entries.Keys.Order(StringComparer.Ordinal))
            {
                var values = TensorTransforms.ReadFloats(file.Tensor(name));
                if (name == "model.layers.1.mlp.down_proj.weight") values[5] = bad;
                tensors.Add((name, TensorData.From<float>(values, [.. file.Entries[name].Shape])));
            }
        SafeTensorsWriter.Write(Path.Combine(folder, "model.safetensors"), tensors);
        string output = Path.Combine(_root, "out");
        using var checkpoint = Checkpoint.Open(folder);
        var error = Assert.Throws<ModelFormatException>(() => ModelFolderWriter.Write(output, checkpoint, new ExportOptions()))!;
        Assert.That(error.Message, Is.EqualTo($"{folder}: tensor 'model.layers.1.mlp.down_proj.weight' {problem}: the checkpoint is damaged (export with --allow-non-finite to keep it anyway)"));
        Assert.That(Directory.GetFiles(output).Where(f => f.EndsWith(".onnx") || f.EndsWith(".data")), Is.Empty, "no model is left behind");

        var allowed = ModelFolderWriter.Write(output, checkpoint, new ExportOptions(), allowNonFinite: true);
        Assert.That(File.Exists(allowed.ModelPath), "--allow-non-finite exports it anyway");
    }

    [Test]
    public void Inspect_checks_an_onnx_files_external_data_and_prints_one_line()
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 512);
        b.Output(b.Op("Add", [x, b.Initializer("w", TensorData.From<float>(new float[512], 512))]), "y", ElementType.Float, 512);
        string path = Path.Combine(_root, "m", "model.onnx");
        ModelWriter.Save(b.Build(), path, new ModelWriterOptions { ExternalDataThreshold = 16 });
        var model = Onnx.Proto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        model.Graph.Initializer[0].ExternalData.Single(e => e.Key == "location").Value = "../../etc/passwd";
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(model));

        var (exitCode, _, stderr) = OnnxDecoderCli.Run("inspect", path);
        Assert.That(exitCode, Is.EqualTo(1));
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(stderr, Does.StartWith($"onnx-decoder: {path}: tensor 'w': external location '../../etc/passwd' escapes the model's folder"));
    }
}
