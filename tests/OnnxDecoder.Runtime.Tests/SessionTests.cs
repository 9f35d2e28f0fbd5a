using System.Text.Json.Nodes;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>Execution providers, the folder contract and the faults the session refuses.</summary>
[Parallelizable(ParallelScope.None)]
public class SessionTests
{
    [Test]
    public void Asking_for_cuda_on_a_build_or_machine_without_it_names_the_provider_and_the_fix()
    {
        var error = Assert.Throws<ExecutionProviderException>(() => new DecoderSession(Fixtures.Stories(Lowering.Ort),
            new DecoderSessionOptions { Providers = new ExecutionProviderOptions { Preference = [ExecutionProvider.Cuda] } }).Dispose())!;
        Assert.That(error.Message, Does.StartWith("cuda execution provider could not be loaded: "));
        Assert.That(error.Message, Does.Contain("use --ep cpu, or allow fallback"));
    }

    [Test]
    public void Fallback_happens_only_when_allowed()
    {
        using var session = new DecoderSession(Fixtures.Stories(Lowering.Ort), new DecoderSessionOptions
        {
            Providers = new ExecutionProviderOptions { Preference = [ExecutionProvider.Cuda, ExecutionProvider.DirectML, ExecutionProvider.Cpu], AllowFallback = true },
        });
        Assert.That(session.Provider, Is.EqualTo(ExecutionProvider.Cpu));
    }

    [Test]
    public void The_ort_export_shares_past_and_present_and_the_portable_one_does_not()
    {
        using var ort = new DecoderSession(Fixtures.Stories(Lowering.Ort));
        using var portable = new DecoderSession(Fixtures.Stories(Lowering.Portable));
        Assert.That(ort.Folder.PastPresentShareBuffer, Is.True);
        Assert.That(portable.Folder.PastPresentShareBuffer, Is.False);
        // 5 layers x 2 x 4 kv heads x 512 positions x 8 x 4 bytes; the portable cache has two buffers per tensor.
        Assert.That(ort.KvCacheBytes, Is.EqualTo(5L * 2 * 4 * 512 * 8 * 4));
        Assert.That(portable.KvCacheBytes, Is.EqualTo(2 * ort.KvCacheBytes));
    }

    [Test]
    public void A_kv_cache_over_budget_is_refused_with_the_arithmetic()
    {
        var error = Assert.Throws<InvalidOperationException>(() => new DecoderSession(Fixtures.Stories(Lowering.Ort),
            new DecoderSessionOptions { BatchSize = 4, MaxKvCacheBytes = 1 << 20 }).Dispose())!;
        Assert.That(error.Message, Does.StartWith("the KV cache needs 2,621,440 bytes (5 layers x 2 x batch 4 x 4 kv heads x 512 positions x head size 8 x 4 bytes), over the budget of 1,048,576"));
    }

    [Test]
    public void Token_ids_outside_the_vocabulary_are_refused_before_onnx_runtime_sees_them()
    {
        using var session = new DecoderSession(Fixtures.Stories(Lowering.Ort));
        Assert.That(() => session.Append([1, 512], 2), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("token id 512 is outside the vocabulary (0..511)"));
        Assert.That(session.Length, Is.Zero, "nothing was appended");
        Assert.That(() => session.Append([-1], 1), Throws.TypeOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void A_prompt_longer_than_the_context_is_refused()
    {
        using var session = new DecoderSession(Fixtures.Stories(Lowering.Ort), new DecoderSessionOptions { MaxLength = 16 });
        Assert.That(() => session.Append(new long[20], 20), Throws.TypeOf<ContextFullException>().With.Message.EqualTo("the context is full: 0 positions used, 20 more requested, max length 16"));
        var generator = new Generator(session, Tokenization.TextTokenizer.Load(session.Folder.Directory, 1));
        Assert.That(() => generator.Generate(Enumerable.Repeat(5, 30).ToArray(), new GenerationOptions()), Throws.TypeOf<ContextFullException>().With.Message.Contains("shorten the prompt"));
    }

    [Test]
    public void Concurrent_calls_on_one_session_are_refused_by_design()
    {
        using var session = new DecoderSession(Fixtures.Stories(Lowering.Ort));
        session.Append([1, 403], 2);
        var failures = 0;
        Parallel.For(0, 8, _ =>
        {
            try { for (int i = 0; i < 20 && session.Length < 500; i++) session.Step([403]); }
            catch (InvalidOperationException e) when (e.Message.Contains("already running")) { Interlocked.Increment(ref failures); }
        });
        Assert.That(failures, Is.GreaterThan(0), "overlapping calls were detected");
    }

    [Test]
    public void Chunked_prefill_equals_one_prefill()
    {
        var prompt = Exporters.Tests.Stories260K.Golden().PromptIds.Select(i => (long)i).ToArray();
        using var whole = new DecoderSession(Fixtures.Stories(Lowering.Portable));
        using var chunked = new DecoderSession(Fixtures.Stories(Lowering.Portable), new DecoderSessionOptions { PrefillChunk = 2 });
        var a = whole.Append(prompt, prompt.Length).ToArray();
        var b = chunked.Append(prompt, prompt.Length).ToArray();
        Assert.That(b, Is.EqualTo(a).Within(1e-5f));
    }

    [TestCase("num_key_value_heads", 2, "graph input 'past_key_values.0.key' is [-1, 4, -1, 8], genai_config.json says [batch, 2, past, 8]")]
    [TestCase("num_hidden_layers", 4, "model.decoder.num_hidden_layers is 4 but the graph has 5 past key inputs")]
    public void Genai_config_that_disagrees_with_the_graph_is_refused(string field, int value, string problem)
    {
        string folder = Path.Combine(Fixtures.Root, $"mismatch-{field}");
        CopyFolder(Fixtures.Stories(Lowering.Ort), folder);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "genai_config.json")))!;
        config["model"]!["decoder"]![field] = value;
        File.WriteAllText(Path.Combine(folder, "genai_config.json"), config.ToJsonString());
        var error = Assert.Throws<ModelFormatException>(() => new DecoderSession(folder).Dispose())!;
        Assert.That(error.Message, Is.EqualTo($"{Path.Combine(folder, "genai_config.json")}: {problem}"));
    }

    [TestCase("model.decoder.filename", "\"../model.onnx\"", "model.decoder.filename '../model.onnx' must be a plain file name inside the model folder")]
    [TestCase("model.vocab_size", "\"512\"", "model.vocab_size (\"512\") must be a whole number from 1 to 16777216")]
    [TestCase("model.eos_token_id", "[9999]", "model.eos_token_id (9999) must be below model.vocab_size (512)")]
    [TestCase("model.decoder.inputs.past_key_names", "\"past.key\"", "KV name pattern 'past.key' must contain %d")]
    public void Malformed_genai_config_fields_are_refused_by_name(string path, string json, string problem)
    {
        string folder = Path.Combine(Fixtures.Root, $"bad-{path}");
        CopyFolder(Fixtures.Stories(Lowering.Ort), folder);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "genai_config.json")))!;
        var parts = path.Split('.');
        var node = config;
        foreach (var part in parts[..^1]) node = node[part]!;
        node[parts[^1]] = JsonNode.Parse(json);
        File.WriteAllText(Path.Combine(folder, "genai_config.json"), config.ToJsonString());
        var error = Assert.Throws<ModelFormatException>(() => ModelFolder.Open(folder))!;
        Assert.That(error.Message, Is.EqualTo($"{Path.Combine(folder, "genai_config.json")}: {problem}"));
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)), overwrite: true);
    }
}
