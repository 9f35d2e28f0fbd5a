using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Exporters.Gguf;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Exporters.Tokenizers;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>
/// Checkpoints whose parts disagree (GGUF tensors sharing bytes, a shard index that names the wrong
/// shard) and the files an export copies from a checkpoint (tokenizer and chat-template files): each
/// bad case is refused when the checkpoint is opened, with one line naming the file and the tensor or
/// problem; good cases export and copy byte for byte.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class HostileCheckpointFilesTests
{
    private string _root = "";

    [SetUp] public void SetUp() => _root = TestPaths.NewTempFolder("hostile");
    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    private static void AssertRefused(Action open, string path, string problem)
    {
        var error = Assert.Throws(Is.InstanceOf<ModelFormatException>(), () => open())!;
        Assert.That(error.Message, Does.Not.Contain('\n'), "one line");
        Refusals.AssertRefused(open, path, problem);
    }

    // ---- GGUF tensor ranges -------------------------------------------------------------------

    private static readonly (string, uint, byte[])[] Metadata = [("general.architecture", 8, GgufTestWriter.Str("llama"))];

    private string Gguf(string name, IReadOnlyList<(string, long[], uint, byte[])> tensors, IReadOnlyList<ulong>? offsets,
        IReadOnlyList<(string, uint, byte[])>? metadata = null)
    {
        string path = Path.Combine(_root, name);
        GgufTestWriter.WriteFile(path, metadata ?? Metadata, tensors, offsets);
        return path;
    }

    // F32 tensors: a is [2, 32] = 256 bytes, b is [1, 32] = 128 bytes (data offsets relative to the data section).
    private static readonly (string, long[], uint, byte[])[] TwoTensors = [("a", [2, 32], 0u, new byte[256]), ("b", [1, 32], 0u, new byte[128])];

    [Test]
    public void Gguf_tensors_that_share_bytes_are_refused_naming_both()
    {
        string adjacent = Gguf("adjacent.gguf", TwoTensors, [0, 256]);
        using (var file = GgufFile.Open(adjacent)) Assert.That(file.Tensors["b"].Offset - file.Tensors["a"].Offset, Is.EqualTo(256), "b right after a is fine");

        string inside = Gguf("inside.gguf", TwoTensors, [0, 128]);
        AssertRefused(() => GgufFile.Open(inside).Dispose(), inside, "tensor 'b' data (offset 128, 128 bytes) overlaps tensor 'a' (offset 0, 256 bytes)");
        AssertRefused(() => Checkpoint.Open(inside).Dispose(), inside, "tensor 'b' data (offset 128, 128 bytes) overlaps tensor 'a'");

        // The same offset: one weight's data exported as another's.
        string aliased = Gguf("aliased.gguf", TwoTensors, [0, 0]);
        AssertRefused(() => GgufFile.Open(aliased).Dispose(), aliased, "tensor 'a' data (offset 0, 256 bytes) overlaps tensor 'b' (offset 0, 128 bytes)");

        // b listed first but placed inside a's range.
        string reversed = Gguf("reversed.gguf", [TwoTensors[1], TwoTensors[0]], [224, 0]);
        AssertRefused(() => GgufFile.Open(reversed).Dispose(), reversed, "tensor 'b' data (offset 224, 128 bytes) overlaps tensor 'a' (offset 0, 256 bytes)");
    }

    [Test]
    public void Gguf_tensor_offsets_must_be_aligned_and_names_unique()
    {
        string path = Gguf("misaligned.gguf", TwoTensors, [0, 264]);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "tensor 'b' offset 264 is not aligned to 32");

        path = Gguf("misaligned-64.gguf", TwoTensors, [0, 288], [.. Metadata, ("general.alignment", 4, GgufTestWriter.U32(64))]);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "tensor 'b' offset 288 is not aligned to 64");

        path = Gguf("twice.gguf", [TwoTensors[0], ("a", [1, 32], 0u, new byte[128])], [0, 256]);
        AssertRefused(() => GgufFile.Open(path).Dispose(), path, "tensor 'a' appears twice");
    }

    // ---- sharded safetensors -----------------------------------------------------------------------

    private const string Shard1 = "model-00001-of-00002.safetensors", Shard2 = "model-00002-of-00002.safetensors";

    private static List<(string Name, ITensorSource Tensor)> ReadTensors(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        return file.Entries.Keys.Order(StringComparer.Ordinal)
            .Select(name => (name, (ITensorSource)TensorData.From<float>(TensorTransforms.ReadFloats(file.Tensor(name)), [.. file.Entries[name].Shape])))
            .ToList();
    }

    /// <summary>llama-tiny split into two shards (first half of the sorted names, then the rest) with its index;
    /// returns the folder and the tensors of each shard.</summary>
    private (string Folder, List<(string Name, ITensorSource Tensor)> First, List<(string Name, ITensorSource Tensor)> Second) ShardedSynth()
    {
        string folder = Path.Combine(_root, "sharded");
        SynthPresets.Write("llama-tiny", 1, folder);
        var tensors = ReadTensors(Path.Combine(folder, "model.safetensors"));
        File.Delete(Path.Combine(folder, "model.safetensors"));
        var first = tensors.Take(tensors.Count / 2).ToList();
        var second = tensors.Skip(tensors.Count / 2).ToList();
        SafeTensorsWriter.Write(Path.Combine(folder, Shard1), first);
        SafeTensorsWriter.Write(Path.Combine(folder, Shard2), second);
        WriteIndex(folder, [.. first.Select(t => (t.Name, Shard1)), .. second.Select(t => (t.Name, Shard2))]);
        return (folder, first, second);
    }

    private static string WriteIndex(string folder, IEnumerable<(string Tensor, string Shard)> weightMap)
    {
        var map = new JsonObject();
        foreach (var (tensor, shard) in weightMap) map[tensor] = shard;
        string path = Path.Combine(folder, SafeTensorsIndex.FileName);
        File.WriteAllText(path, new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map }.ToJsonString());
        return path;
    }

    private static IEnumerable<(string, string)> MapOf(List<(string Name, ITensorSource)> first, List<(string Name, ITensorSource)> second) =>
        [.. first.Select(t => (t.Name, Shard1)), .. second.Select(t => (t.Name, Shard2))];

    [Test]
    public void A_consistent_sharded_folder_opens_with_every_tensor_of_both_shards()
    {
        var (folder, first, second) = ShardedSynth();
        using var checkpoint = Checkpoint.Open(folder);
        Assert.That(checkpoint.Weights.Names, Is.EquivalentTo(first.Concat(second).Select(t => t.Name)));
        var (name, tensor) = second[^1];
        Assert.That(TensorTransforms.ReadFloats(checkpoint.Weights.Get(name)), Is.EqualTo(TensorTransforms.ReadFloats(tensor)));
    }

    [Test]
    public void An_index_that_names_a_shard_not_holding_the_tensor_is_refused()
    {
        var (folder, first, second) = ShardedSynth();
        string moved = second[0].Name;
        string index = WriteIndex(folder, MapOf(first, second).Select(e => e.Item1 == moved ? (moved, Shard1) : e));
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), index,
            $"weight_map places tensor '{moved}' in shard '{Shard1}', but shard '{Shard2}' holds it");

        // The export never starts: nothing is written.
        string output = Path.Combine(_root, "out");
        Assert.Throws(Is.InstanceOf<ModelFormatException>(), () => ModelFolderWriter.Export(folder, null, output, new ExportOptions()));
        Assert.That(Directory.Exists(output), Is.False);
    }

    [Test]
    public void An_index_entry_whose_tensor_no_shard_holds_is_refused()
    {
        var (folder, first, second) = ShardedSynth();
        string index = WriteIndex(folder, [.. MapOf(first, second), ("model.layers.0.self_attn.q_norm.weight", Shard2)]);
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), index,
            $"weight_map places tensor 'model.layers.0.self_attn.q_norm.weight' in shard '{Shard2}', which does not hold it");
    }

    [Test]
    public void A_tensor_the_index_leaves_out_is_refused()
    {
        var (folder, first, second) = ShardedSynth();
        string left = first[1].Name;
        string index = WriteIndex(folder, MapOf(first, second).Where(e => e.Item1 != left));
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), index, $"shard '{Shard1}' holds tensor '{left}', which weight_map does not list");
    }

    [Test]
    public void A_tensor_in_two_shards_is_refused_naming_both()
    {
        var (folder, first, second) = ShardedSynth();
        var copy = first[0];
        SafeTensorsWriter.Write(Path.Combine(folder, Shard2), [.. second, copy]);
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), Path.Combine(folder, Shard2), $"tensor '{copy.Name}' is also in shard '{Shard1}'");
    }

    [Test]
    public void A_tensor_listed_twice_in_the_index_is_refused()
    {
        var (folder, first, second) = ShardedSynth();
        string index = WriteIndex(folder, MapOf(first, second));
        string name = first[0].Name;
        // System.Text.Json never writes a key twice, so the duplicate is spliced into the text.
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"weight_map\":{", $"\"weight_map\":{{\"{name}\":\"{Shard2}\","));
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), index, $"weight_map lists tensor '{name}' twice");
    }

    [TestCase("../" + Shard1)]
    [TestCase("ABSOLUTE")]
    [TestCase("sub/" + Shard1)]
    [TestCase("..")]
    [TestCase("")]
    [TestCase("sub\\" + Shard1)]
    [TestCase("C:" + Shard1)]
    public void An_index_naming_a_shard_outside_the_folder_is_refused(string shard)
    {
        var (folder, first, second) = ShardedSynth();
        if (shard == "ABSOLUTE") shard = Path.Combine(folder, Shard1); // an existing file, named by its absolute path
        Directory.CreateDirectory(Path.Combine(folder, "sub"));
        File.Copy(Path.Combine(folder, Shard1), Path.Combine(folder, "sub", Shard1));
        string name = second[0].Name;
        string index = WriteIndex(folder, MapOf(first, second).Select(e => e.Item1 == name ? (name, shard) : e));
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), index,
            $"shard '{shard}' (listed for tensor '{name}') must be a plain file name inside the model folder");
    }

    [Test]
    public void A_shard_that_is_a_symbolic_link_is_refused()
    {
        var (folder, _, _) = ShardedSynth();
        string outside = Path.Combine(_root, "elsewhere.safetensors");
        File.Move(Path.Combine(folder, Shard2), outside);
        File.CreateSymbolicLink(Path.Combine(folder, Shard2), outside);
        AssertRefused(() => Checkpoint.Open(folder).Dispose(), Path.Combine(folder, Shard2), "is a symbolic link");
    }

    // ---- tokenizer files copied from a Hugging Face folder ----------------------------------------

    /// <summary>Files an export copies, beside the synth preset's own (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json).</summary>
    private static readonly Dictionary<string, string> ExtraFiles = new()
    {
        ["chat_template.jinja"] = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
        ["special_tokens_map.json"] = """{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}""",
        ["added_tokens.json"] = """{"<|assistant|>": 512}""",
        ["generation_config.json"] = """{"bos_token_id": 511, "eos_token_id": [511], "temperature": 0.6}""",
        ["tokenizer.model"] = "not read by this test: only copied",
        ["tokenizer.tiktoken"] = "IQ== 0\n",
    };

    private string SynthWithTokenizerFiles()
    {
        string folder = Path.Combine(_root, "hf");
        SynthPresets.Write("llama-tiny", 1, folder);
        foreach (var (name, text) in ExtraFiles) File.WriteAllText(Path.Combine(folder, name), text);
        File.WriteAllText(Path.Combine(folder, "notes.txt"), "not a tokenizer file");
        return folder;
    }

    [Test]
    public void An_export_copies_every_tokenizer_and_chat_template_file_byte_for_byte_and_nothing_else()
    {
        string folder = SynthWithTokenizerFiles();
        string output = Path.Combine(_root, "out");
        ModelFolderWriter.Export(folder, null, output, new ExportOptions());
        string[] expected = [.. ExtraFiles.Keys, "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"];
        Assert.That(CheckpointTokenizerFiles.Names, Is.EquivalentTo(expected));
        foreach (var name in expected)
            Assert.That(File.ReadAllBytes(Path.Combine(output, name)), Is.EqualTo(File.ReadAllBytes(Path.Combine(folder, name))), name);
        Assert.That(File.Exists(Path.Combine(output, "notes.txt")), Is.False);
        Assert.That(File.Exists(Path.Combine(output, "config.json")), Is.False);
    }

    [Test]
    public void A_link_left_in_the_output_folder_is_replaced_not_written_through()
    {
        string folder = SynthWithTokenizerFiles();
        string output = Path.Combine(_root, "out"), victim = Path.Combine(_root, "victim.txt");
        Directory.CreateDirectory(output);
        File.WriteAllText(victim, "keep me");
        File.CreateSymbolicLink(Path.Combine(output, "tokenizer.json"), victim);
        using (var checkpoint = Checkpoint.Open(folder)) checkpoint.WriteTokenizer!(output);
        Assert.That(File.ReadAllText(victim), Is.EqualTo("keep me"));
        Assert.That(new FileInfo(Path.Combine(output, "tokenizer.json")).LinkTarget, Is.Null);
        Assert.That(File.ReadAllBytes(Path.Combine(output, "tokenizer.json")), Is.EqualTo(File.ReadAllBytes(Path.Combine(folder, "tokenizer.json"))));
    }

    /// <summary>Lays <paramref name="source"/> out as the hub cache does: every file a blob under
    /// models--org--name/blobs, linked from snapshots/REVISION by a relative link.</summary>
    private string AsHubCache(string source)
    {
        string repository = Path.Combine(_root, "hub", "models--org--tiny"), blobs = Path.Combine(repository, "blobs");
        string snapshot = Path.Combine(repository, "snapshots", "0123abcd");
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        int blob = 0;
        foreach (var file in Directory.GetFiles(source))
        {
            string name = $"blob{blob++:D4}";
            File.Copy(file, Path.Combine(blobs, name));
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", name));
        }
        return snapshot;
    }

    [Test]
    public void A_hub_cache_snapshot_whose_links_point_into_its_own_blobs_exports_like_the_folder_itself()
    {
        string folder = SynthWithTokenizerFiles();
        string snapshot = AsHubCache(folder);
        string fromFolder = Path.Combine(_root, "out-folder"), fromCache = Path.Combine(_root, "out-cache");
        ModelFolderWriter.Export(folder, null, fromFolder, new ExportOptions());
        ModelFolderWriter.Export(snapshot, null, fromCache, new ExportOptions());
        Assert.That(File.Exists(Path.Combine(fromCache, "model.onnx")), "model.onnx (its metadata names the source folder, so it differs in bytes)");
        foreach (var name in new[] { "model.onnx.data", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja" })
            Assert.That(File.ReadAllBytes(Path.Combine(fromCache, name)), Is.EqualTo(File.ReadAllBytes(Path.Combine(fromFolder, name))), name);
        Assert.That(new FileInfo(Path.Combine(fromCache, "tokenizer.json")).LinkTarget, Is.Null, "the export holds copies, not links");
    }

    [TestCase("tokenizer.json", "a tokenizer file copied into the export")]
    [TestCase("model.safetensors", "a shard")]
    public void A_hub_cache_link_that_leaves_its_blobs_folder_is_refused(string name, string what)
    {
        string snapshot = AsHubCache(SynthWithTokenizerFiles());
        string outside = Path.Combine(_root, "outside");
        File.Copy(Path.Combine(snapshot, name), outside);
        File.Delete(Path.Combine(snapshot, name));
        File.CreateSymbolicLink(Path.Combine(snapshot, name), Path.Combine("..", "..", "..", "..", "outside"));
        string output = Path.Combine(_root, "out");
        AssertRefused(() => ModelFolderWriter.Export(snapshot, null, output, new ExportOptions()), Path.Combine(snapshot, name),
            $"is a symbolic link (to '../../../../outside'); {what} must be a regular file, or a Hugging Face hub cache link");
        Assert.That(Directory.Exists(output), Is.False, "refused before anything is written");
    }

    private static void Run(string program, params string[] arguments)
    {
        using var process = Process.Start(new ProcessStartInfo(program, arguments) { RedirectStandardError = true })!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.EqualTo(0), $"{program} {string.Join(' ', arguments)}: {error}");
    }

    [TestCase("symlink", "tokenizer_config.json", "is a symbolic link (to '")]
    [TestCase("hardlink", "chat_template.jinja", "has more than one hard link")]
    [TestCase("fifo", "chat_template.jinja", "is not a regular file")]
    [TestCase("folder", "tokenizer.json", "is a folder")]
    [TestCase("huge", "tokenizer.json", "is 67108865 bytes, over the 67108864-byte limit for tokenizer files")]
    public void A_tokenizer_file_that_is_not_a_plain_small_file_refuses_the_export(string kind, string name, string problem)
    {
        string folder = SynthWithTokenizerFiles();
        string path = Path.Combine(folder, name), outside = Path.Combine(_root, "secret.txt");
        File.WriteAllText(outside, "a file outside the checkpoint");
        File.Delete(path);
        switch (kind)
        {
            case "symlink": File.CreateSymbolicLink(path, outside); break;
            case "hardlink": Run("ln", outside, path); break;
            case "fifo": Run("mkfifo", path); break;
            case "folder": Directory.CreateDirectory(path); break;
            case "huge":
                using (var file = File.Create(path)) file.SetLength(CheckpointTokenizerFiles.MaxBytes + 1); // sparse
                break;
        }
        string output = Path.Combine(_root, "out");
        AssertRefused(() => ModelFolderWriter.Export(folder, null, output, new ExportOptions()), path, problem);
        Assert.That(Directory.Exists(output), Is.False, "refused before anything is written");
    }

    // ---- GGUF chat templates -----------------------------------------------------------------------

    private static byte[] Array(uint type, IEnumerable<byte[]> items)
    {
        var list = items.ToList();
        return [.. GgufTestWriter.U32(type), .. GgufTestWriter.U64((ulong)list.Count), .. list.SelectMany(i => i)];
    }

    /// <summary>A llama-tiny GGUF with a 512-piece SentencePiece vocabulary and the given extra metadata.</summary>
    private string GgufWithVocabulary(string name, params (string Key, uint Type, byte[] Value)[] extra)
    {
        string synth = Path.Combine(_root, "synth-" + name);
        SynthPresets.Write("llama-tiny", 5, synth);
        var weights = new InMemoryWeights();
        DecoderConfig config;
        using (var hf = Checkpoint.Open(synth))
        {
            config = hf.Config;
            foreach (var tensor in hf.Weights.Names)
            {
                var source = hf.Weights.Get(tensor);
                weights.Add(tensor, TensorTransforms.ReadFloats(source), [.. source.Shape]);
            }
        }
        var pieces = Enumerable.Range(0, config.VocabSize).Select(i => i switch { 0 => "<unk>", 1 => "<s>", 2 => "</s>", 511 => "<|endoftext|>", _ => $"▁w{i}" }).ToList();
        (string, uint, byte[])[] vocabulary =
        [
            ("tokenizer.ggml.model", 8, GgufTestWriter.Str("llama")),
            ("tokenizer.ggml.tokens", 9, Array(8, pieces.Select(GgufTestWriter.Str))),
            ("tokenizer.ggml.scores", 9, Array(6, pieces.Select((_, i) => GgufTestWriter.F32(-i)))),
            ("tokenizer.ggml.token_type", 9, Array(5, pieces.Select((_, i) => GgufTestWriter.U32(i is 0 ? 2u : i is 1 or 2 or 511 ? 3u : 1u)))),
        ];
        string path = Path.Combine(_root, name);
        GgufTestWriter.Write(path, config, weights, 0u, [.. vocabulary, .. extra]);
        return path;
    }

    private static JsonNode? ExportedChatTemplate(string gguf, string output)
    {
        using (var checkpoint = Checkpoint.Open(gguf)) checkpoint.WriteTokenizer!(output);
        return JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer_config.json")))!["chat_template"];
    }

    private const string DefaultTemplate = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}";
    private const string ToolTemplate = "{% for t in tools %}{{ t | tojson }}{% endfor %}";

    [Test]
    public void A_gguf_chat_template_lands_in_the_exported_tokenizer_config()
    {
        string output = Path.Combine(_root, "plain");
        Directory.CreateDirectory(output);
        string gguf = GgufWithVocabulary("plain.gguf", ("tokenizer.chat_template", 8, GgufTestWriter.Str(DefaultTemplate)));
        var template = ExportedChatTemplate(gguf, output);
        Assert.That(template!.GetValueKind(), Is.EqualTo(JsonValueKind.String));
        Assert.That(template.GetValue<string>(), Is.EqualTo(DefaultTemplate));

        string none = Path.Combine(_root, "none");
        Directory.CreateDirectory(none);
        Assert.That(ExportedChatTemplate(GgufWithVocabulary("none.gguf"), none), Is.Null, "no template in the GGUF, none written");
    }

    [Test]
    public void Named_gguf_chat_templates_become_transformers_list_of_named_templates()
    {
        string output = Path.Combine(_root, "named");
        Directory.CreateDirectory(output);
        string gguf = GgufWithVocabulary("named.gguf",
            ("tokenizer.chat_template", 8, GgufTestWriter.Str(DefaultTemplate)),
            ("tokenizer.chat_template.tool_use", 8, GgufTestWriter.Str(ToolTemplate)),
            ("tokenizer.chat_templates", 9, Array(8, [GgufTestWriter.Str("tool_use")])));
        var templates = ExportedChatTemplate(gguf, output)!.AsArray();
        Assert.That(templates.Select(t => (t!["name"]!.GetValue<string>(), t["template"]!.GetValue<string>())),
            Is.EqualTo(new[] { ("default", DefaultTemplate), ("tool_use", ToolTemplate) }));

        string missing = GgufWithVocabulary("missing.gguf",
            ("tokenizer.chat_template", 8, GgufTestWriter.Str(DefaultTemplate)),
            ("tokenizer.chat_templates", 9, Array(8, [GgufTestWriter.Str("rag")])));
        AssertRefused(() => Checkpoint.Open(missing).Dispose(), missing, "metadata 'tokenizer.chat_templates' lists 'rag' but 'tokenizer.chat_template.rag' is missing");

        string wrongType = GgufWithVocabulary("wrong-type.gguf", ("tokenizer.chat_template", 4, GgufTestWriter.U32(7)));
        AssertRefused(() => Checkpoint.Open(wrongType).Dispose(), wrongType, "metadata 'tokenizer.chat_template' must be a string, found UInt32");
    }
}
