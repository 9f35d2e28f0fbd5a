using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// A model folder from elsewhere: tools/genai-style-builder/build.py (Python, python3-onnx, none of
/// our code) writes stories260K the way onnxruntime-genai's builder would, with GroupQueryAttention
/// over a shared past/present buffer and no position_ids input. Our runtime must reproduce
/// llama2.c's golden tokens from it, alone and batched, with and without tokenizer files.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class GenAiStyleFolderTests
{
    private static string _folder = "";

    [OneTimeSetUp]
    public void Build()
    {
        _folder = Path.Combine(Fixtures.Root, "genai-style-stories260K");
        if (Directory.Exists(_folder)) return;
        var (exitCode, output) = RunBuilder(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, _folder);
        Assert.That(exitCode, Is.EqualTo(0), $"build.py failed (needs /usr/bin/python3 with python3-onnx and python3-numpy):\n{output}");
    }

    private static (int ExitCode, string Output) RunBuilder(params string[] args)
    {
        if (!File.Exists(PythonOnnx.Python)) Assert.Fail($"{PythonOnnx.Python} is missing: install python3-onnx and python3-numpy");
        var start = new ProcessStartInfo(PythonOnnx.Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(TestPaths.RepoRoot, "tools", "genai-style-builder", "build.py"));
        foreach (var arg in args) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000)) { process.Kill(); Assert.Fail("build.py timed out"); }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    /// <summary>A copy of the built folder with its genai_config.json edited (and optionally its tokenizer files left out).</summary>
    private static string Variant(string name, Action<JsonObject>? edit = null, bool tokenizer = true)
    {
        string folder = Path.Combine(Fixtures.Root, $"genai-style-{name}");
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(_folder))
            if (tokenizer || !Path.GetFileName(file).StartsWith("tokenizer", StringComparison.Ordinal))
                File.Copy(file, Path.Combine(folder, Path.GetFileName(file)), overwrite: true);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, ModelFolder.ConfigFileName)))!.AsObject();
        edit?.Invoke(config);
        File.WriteAllText(Path.Combine(folder, ModelFolder.ConfigFileName), config.ToJsonString());
        return folder;
    }

    [Test]
    public void The_folder_is_what_the_builder_promises_grouped_query_attention_shared_kv_no_position_ids()
    {
        using var model = new DecoderModel(_folder);
        Assert.That(model.Session.InputMetadata.Keys, Does.Not.Contain("position_ids"));
        Assert.That(model.HasPositionIds, Is.False);
        Assert.That(model.Folder.PastPresentShareBuffer, Is.True);
        Assert.That(model.Folder.PositionIdsName, Is.Null);
        var (exitCode, output) = PythonOnnx.Run(
            "import sys, onnx\nm = onnx.load(sys.argv[1])\nprint(sorted({(n.domain, n.op_type) for n in m.graph.node if n.domain}))",
            Path.Combine(_folder, "model.onnx"));
        Assert.That(exitCode, Is.EqualTo(0), output);
        Assert.That(output, Does.Contain("('com.microsoft', 'GroupQueryAttention')"));
    }

    [Test]
    public void Greedy_decoding_reproduces_llama2c_golden_tokens_to_the_models_own_stop()
    {
        var (promptIds, golden) = Stories260K.Golden();
        using var session = new DecoderSession(_folder);
        var tokenizer = TextTokenizer.Load(_folder, session.Folder.BosTokenId);
        Assert.That(tokenizer.Encode("Once upon a time", addBos: true), Is.EqualTo(promptIds), "the converted tokenizer.json encodes as llama2.c");
        var options = new GenerationOptions { MaxNewTokens = 400, Sampling = session.Folder.Search.Sampling };
        var result = new Generator(session, tokenizer).Generate(promptIds, options);
        Assert.That(result.TokenIds, Is.EqualTo(golden));
        Assert.That(result.StopReason, Is.EqualTo(StopReason.Eos), "llama2.c stops when the model generates BOS, listed in eos_token_id");
        string text = "Once upon a time" + result.Text;
        Assert.That(text, Does.StartWith(Stories260K.GoldenText));
    }

    [Test]
    public void The_builder_reads_llama2c_version_1_checkpoints_too()
    {
        string folder = Path.Combine(Fixtures.Root, "genai-style-stories260K-v1");
        var (exitCode, output) = RunBuilder(Stories260K.Version1Checkpoint, Stories260K.Tokenizer, folder);
        Assert.That(exitCode, Is.EqualTo(0), output);
        var (promptIds, golden) = Stories260K.Golden();
        using var session = new DecoderSession(folder);
        Assert.That(new Generator(session, null).Generate(promptIds, new GenerationOptions { MaxNewTokens = 400 }).TokenIds, Is.EqualTo(golden));
    }

    [Test]
    public void Batched_rows_of_different_lengths_each_match_a_run_alone()
    {
        var (promptIds, golden) = Stories260K.Golden();
        int[][] prompts = [promptIds, [1, 403], [1, 403, 407, 261, 378, 432, 383, 286, 261], [1, 450, 300]];
        var options = new GenerationOptions { MaxNewTokens = 60 };
        using var model = new DecoderModel(_folder);
        var tokenizer = TextTokenizer.Load(_folder, model.Folder.BosTokenId);
        var alone = new List<int[]>();
        using (var session = new DecoderSession(model))
            foreach (var prompt in prompts) alone.Add(new Generator(session, tokenizer).Generate(prompt, options).TokenIds);
        Assert.That(alone[0], Is.EqualTo(golden.Take(60)));
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 4 });
        var batched = Task.WhenAll(prompts.Select(p => batcher.GenerateAsync(p, options))).GetAwaiter().GetResult();
        Assert.That(batched.Select(r => r.TokenIds), Is.EqualTo(alone));
    }

    [Test]
    public void Token_id_prompts_run_without_tokenizer_files_and_text_names_the_files_it_looked_for()
    {
        var (promptIds, golden) = Stories260K.Golden();
        string folder = Variant("no-tokenizer", tokenizer: false);
        Assert.That(TextTokenizer.LoadIfPresent(folder, 1), Is.Null);
        using (var session = new DecoderSession(folder))
        {
            var generator = new Generator(session, null);
            var result = generator.Generate(promptIds, new GenerationOptions { MaxNewTokens = 30 });
            Assert.That(result.TokenIds, Is.EqualTo(golden.Take(30)));
            Assert.That(result.Text, Is.Empty);
            var error = Assert.Throws<InvalidOperationException>(() => generator.Generate("Once upon a time", new GenerationOptions()))!;
            Assert.That(error.Message, Does.Contain("tokenizer.json").And.Contain("tokenizer.model").And.Contain(session.Folder.Directory));
        }

        var ids = OnnxDecoderCli.Run("generate", "--model", folder, "--prompt-ids", string.Join(",", promptIds), "--max-tokens", "20", "--format", "json");
        Assert.That(ids.ExitCode, Is.EqualTo(0), ids.Stderr);
        using (var output = JsonDocument.Parse(ids.Stdout))
            Assert.That(output.RootElement.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(golden.Take(20)));
        var text = OnnxDecoderCli.Run("generate", "--model", folder, "--prompt", "Once upon a time");
        Assert.That(text.ExitCode, Is.Not.EqualTo(0));
        Assert.That(text.Stderr.Trim(), Does.Contain("tokenizer.json").And.Contain("tokenizer.model").And.Contain("tokenizer.tiktoken").And.Not.Contain("\n"));
        var bad = OnnxDecoderCli.Run("generate", "--model", folder, "--prompt-ids", "1,x");
        Assert.That(bad.ExitCode, Is.Not.EqualTo(0));
        Assert.That(bad.Stderr, Does.Contain("--prompt-ids").And.Contain("'x'"));
    }

    [Test]
    public void Search_values_become_generation_defaults_the_way_onnxruntime_genai_reads_them()
    {
        string sampled = Variant("do-sample", c =>
        {
            var search = c["search"]!.AsObject();
            search["do_sample"] = true;
            search["temperature"] = 0.7;
            search["top_k"] = 5;
            search["top_p"] = 0.9;
            search["repetition_penalty"] = 1.2;
            search["max_length"] = 40;
        });
        var folder = ModelFolder.Open(sampled);
        Assert.That(folder.Search.Sampling, Is.EqualTo(new SamplingOptions { Temperature = 0.7f, TopK = 5, TopP = 0.9f, RepetitionPenalty = 1.2f }));
        Assert.That(folder.Search.MaxLength, Is.EqualTo(40));
        Assert.That(folder.Search.MaxNewTokens(promptLength: 5, requested: null, fallback: 128), Is.EqualTo(35), "max_length counts the prompt");
        Assert.That(folder.Search.MaxNewTokens(promptLength: 5, requested: 100, fallback: 128), Is.EqualTo(100), "a request's value overrides");

        // Without do_sample genai decodes greedily: temperature, top_k and top_p wait for do_sample; the penalty applies.
        var greedy = ModelFolder.Open(Variant("greedy-penalty", c => { c["search"]!["top_k"] = 5; c["search"]!["repetition_penalty"] = 1.3; }));
        Assert.That(greedy.Search.Sampling, Is.EqualTo(new SamplingOptions { RepetitionPenalty = 1.3f }));
        // genai's own defaults where do_sample is set and the values are absent: temperature 1, top_k 50, top_p 0 (off).
        var defaults = ModelFolder.Open(Variant("genai-defaults", c =>
        {
            var search = c["search"]!.AsObject();
            foreach (var key in new[] { "temperature", "top_k" }) search.Remove(key);
            search["do_sample"] = true;
            search["top_p"] = 0;
        }));
        Assert.That(defaults.Search.Sampling, Is.EqualTo(new SamplingOptions { Temperature = 1, TopK = 50 }));

        // The CLI: the folder's sampling applies when no flag is given; a flag overrides it.
        var (promptIds, golden) = Stories260K.Golden();
        string[] Run(params string[] extra)
        {
            var run = OnnxDecoderCli.Run(["generate", "--model", sampled, "--prompt-ids", string.Join(",", promptIds), "--format", "json", .. extra]);
            Assert.That(run.ExitCode, Is.EqualTo(0), run.Stderr);
            using var output = JsonDocument.Parse(run.Stdout);
            return output.RootElement.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32().ToString()).ToArray();
        }
        Assert.That(Run("--seed", "3"), Has.Length.EqualTo(35), "search.max_length 40 leaves 35 tokens after a 5-token prompt");
        Assert.That(Run("--temperature", "0", "--repetition-penalty", "1", "--max-tokens", "50").Select(int.Parse), Is.EqualTo(golden.Take(50)));
    }

    [TestCase("num_beams", 4, "search.num_beams is 4; beam search is not supported: set it to 1")]
    [TestCase("temperature", 5, "'search.temperature' is 5; it must be between 0 and 2")]
    [TestCase("top_k", -1, "'search.top_k' is -1; it must be a whole number between 0 and")]
    public void An_unsupported_or_out_of_range_search_value_is_refused_naming_the_field(string field, double value, string message)
    {
        string folder = Variant($"bad-{field}", c => c["search"]![field] = value);
        Refusals.AssertRefused(() => ModelFolder.Open(folder), Path.Combine(folder, ModelFolder.ConfigFileName), message);
    }

    [Test]
    public void A_config_that_names_position_ids_the_graph_lacks_is_refused()
    {
        string folder = Variant("names-position-ids", c => c["model"]!["decoder"]!["inputs"]!["position_ids"] = "position_ids");
        Refusals.AssertRefused(() => new DecoderModel(folder).Dispose(), Path.Combine(folder, ModelFolder.ConfigFileName), "model.decoder.inputs.position_ids is 'position_ids'");
    }
}
