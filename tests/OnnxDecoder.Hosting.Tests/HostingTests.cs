using System.Diagnostics.Metrics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime;
using TextTokenizer = OnnxDecoder.Runtime.Tokenization.TextTokenizer;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Hosting.Tests;

[Parallelizable(ParallelScope.None)]
public class HostingTests
{
    private static string _root = "", _model = "";

    [OneTimeSetUp]
    public void Export()
    {
        _root = TestPaths.NewTempFolder("hosting");
        _model = Path.Combine(_root, "stories260k");
        ModelFolderWriter.Export(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, _model, new ExportOptions { Lowering = Lowering.Ort });
    }

    [OneTimeTearDown] public void Delete() => Directory.Delete(_root, recursive: true);

    private static IHost Host(Dictionary<string, string?> settings)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(settings.ToDictionary(kv => $"OnnxDecoder:{kv.Key}", kv => kv.Value));
        builder.Services.AddOnnxDecoder(builder.Configuration.GetSection(OnnxDecoderOptions.Section));
        return builder.Build();
    }

    private static async Task<IHost> Started(int sequences = 2, int queue = 64)
    {
        var host = Host(new() { ["ModelPath"] = _model, ["MaxConcurrentSequences"] = sequences.ToString(), ["MaxQueueLength"] = queue.ToString() });
        await host.StartAsync();
        return host;
    }

    private static int[] GreedyAlone(string prompt, int tokens)
    {
        using var session = new DecoderSession(_model);
        return new Generator(session, TextTokenizer.Load(_model, 1)).Generate(prompt, new GenerationOptions { MaxNewTokens = tokens }).TokenIds;
    }

    [Test]
    public async Task The_chat_client_prompts_with_the_model_folders_own_chat_template()
    {
        const string template = "{% for m in messages %}{{ m.role|capitalize }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
        string folder = Path.Combine(_root, "stories260k-templated");
        Directory.CreateDirectory(folder);
        foreach (string file in Directory.EnumerateFiles(_model)) File.Copy(file, Path.Combine(folder, Path.GetFileName(file)), overwrite: true);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer_config.json")))!.AsObject();
        config["chat_template"] = template;
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config.ToJsonString());

        var host = Host(new() { ["ModelPath"] = folder, ["MaxConcurrentSequences"] = "1" });
        await host.StartAsync();
        var client = host.Services.GetRequiredService<IChatClient>();
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { Temperature = 0, MaxOutputTokens = 20 });
        await host.StopAsync();
        host.Dispose();

        var variables = System.Text.Json.Nodes.JsonNode.Parse("""
            {"messages": [{"role": "user", "content": "Once upon a time"}], "tools": null, "documents": null, "add_generation_prompt": true}
            """)!.AsObject();
        var reference = OnnxDecoder.Runtime.Tests.ChatTemplates.Jinja2Reference.Render([new("hosting", template, variables)])[0];
        Assert.That(reference.Text, Does.EndWith("Assistant:"));
        var tokenizer = TextTokenizer.Load(folder, 1);
        var promptIds = tokenizer.Encode(reference.Text!, addBos: false);
        using var session = new DecoderSession(folder);
        var expected = new Generator(session, tokenizer).Respond(promptIds, new GenerationOptions { MaxNewTokens = 20 });
        Assert.That(response.Usage!.InputTokenCount, Is.EqualTo(promptIds.Length));
        Assert.That(response.Text, Is.EqualTo(expected.Text));
    }

    [Test]
    public async Task The_chat_client_gives_the_same_greedy_text_as_the_generator_with_usage()
    {
        using var host = await Started();
        var client = host.Services.GetRequiredService<IChatClient>();
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { Temperature = 0, MaxOutputTokens = 40 });

        using var session = new DecoderSession(_model);
        var expected = new Generator(session, TextTokenizer.Load(_model, 1)).Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 40 });
        Assert.That(response.Text, Is.EqualTo(expected.Text));
        Assert.That(response.Usage!.InputTokenCount, Is.EqualTo(5));
        Assert.That(response.Usage.OutputTokenCount, Is.EqualTo(40));
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.Length));
        Assert.That(response.ModelId, Is.EqualTo("stories260k"));
        Assert.That(client.GetService<ChatClientMetadata>()!.DefaultModelId, Is.EqualTo("stories260k"));
        await host.StopAsync();
    }

    [Test]
    public async Task Streaming_concatenates_to_the_non_streaming_text_and_options_map()
    {
        using var host = await Started();
        var client = host.Services.GetRequiredService<IChatClient>();
        var messages = new List<ChatMessage> { new(ChatRole.User, "Once upon a time") };
        var whole = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 30 });
        var streamed = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in client.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 30 }))
        {
            streamed.Append(update.Text);
            finish ??= update.FinishReason;
        }
        Assert.That(streamed.ToString(), Is.EqualTo(whole.Text));
        Assert.That(finish, Is.EqualTo(ChatFinishReason.Length));

        var topK1 = await client.GetResponseAsync(messages, new ChatOptions { Temperature = 1.5f, TopK = 1, MaxOutputTokens = 30 });
        Assert.That(topK1.Text, Is.EqualTo(whole.Text), "top-k 1 is greedy");
        var a = await client.GetResponseAsync(messages, new ChatOptions { Temperature = 1, Seed = 42, MaxOutputTokens = 30 });
        var b = await client.GetResponseAsync(messages, new ChatOptions { Temperature = 1, Seed = 42, MaxOutputTokens = 30 });
        Assert.That(b.Text, Is.EqualTo(a.Text), "same seed, same text");
        var stopped = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 100, StopSequences = ["Lily."] });
        Assert.That(stopped.Text, Is.EqualTo(", there was a little girl named "));
        Assert.That(stopped.FinishReason, Is.EqualTo(ChatFinishReason.Stop));
        await host.StopAsync();
    }

    [Test]
    public async Task Concurrent_requests_share_the_sequence_slots_and_each_gets_its_own_answer()
    {
        using var host = await Started(sequences: 2);
        var client = host.Services.GetRequiredService<IChatClient>();
        string[] prompts = ["Once upon a time", "The little dog", "One day, Lily", "Tom and his friend"];
        var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(i =>
            client.GetResponseAsync([new ChatMessage(ChatRole.User, prompts[i % 4])], new ChatOptions { MaxOutputTokens = 24 })));
        for (int i = 0; i < 8; i++)
        {
            using var session = new DecoderSession(_model);
            var expected = new Generator(session, TextTokenizer.Load(_model, 1)).Generate(prompts[i % 4], new GenerationOptions { MaxNewTokens = 24 }).Text;
            Assert.That(answers[i].Text, Is.EqualTo(expected), $"request {i}");
        }
        await host.StopAsync();
    }

    [Test]
    public async Task A_full_queue_refuses_a_request_and_the_slot_returns_when_the_stream_ends()
    {
        using var host = await Started(sequences: 1, queue: 0);
        var client = host.Services.GetRequiredService<IChatClient>();
        var messages = new List<ChatMessage> { new(ChatRole.User, "Once upon a time") };
        await using (var holding = client.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 200 }).GetAsyncEnumerator())
        {
            Assert.That(await holding.MoveNextAsync(), Is.True, "the first request holds the only slot");
            Assert.That(async () => await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 5 }),
                Throws.TypeOf<QueueFullException>().With.Message.Contains("all 1 sequences are busy"));
        }
        var after = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 5 });
        Assert.That(after.Usage!.OutputTokenCount, Is.EqualTo(5), "the slot came back when the stream was left");
        await host.StopAsync();
    }

    [Test]
    public async Task Token_usage_and_durations_are_recorded_as_gen_ai_metrics()
    {
        var usage = new List<(long Value, string? Type)>();
        var instruments = new HashSet<string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) => { if (instrument.Meter.Name == OnnxDecoderTelemetry.Name) l.EnableMeasurementEvents(instrument); };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            instruments.Add(instrument.Name);
            foreach (var tag in tags) if (tag.Key == "gen_ai.token.type") lock (usage) usage.Add((value, tag.Value as string));
        });
        listener.SetMeasurementEventCallback<double>((instrument, _, _, _) => { lock (instruments) instruments.Add(instrument.Name); });
        listener.Start();

        using var host = await Started();
        await host.Services.GetRequiredService<IChatClient>().GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { MaxOutputTokens = 12 });
        listener.RecordObservableInstruments();
        Assert.That(usage, Does.Contain((5L, "input")));
        Assert.That(usage, Does.Contain((12L, "output")));
        Assert.That(instruments, Is.SupersetOf(new[] { "gen_ai.client.token.usage", "gen_ai.client.operation.duration", "gen_ai.server.time_to_first_token" }));
        await host.StopAsync();
    }

    [Test]
    public async Task Health_is_healthy_when_loaded_and_unhealthy_when_loading_fails()
    {
        using (var host = await Started())
        {
            await host.Services.GetRequiredService<IChatClient>().GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], new ChatOptions { MaxOutputTokens = 2 });
            var report = await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
            Assert.That(report.Status, Is.EqualTo(HealthStatus.Healthy));
            await host.StopAsync();
        }

        string broken = Path.Combine(_root, "broken");
        Directory.CreateDirectory(broken);
        File.Copy(Path.Combine(_model, "genai_config.json"), Path.Combine(broken, "genai_config.json"), overwrite: true);
        File.WriteAllText(Path.Combine(broken, "model.onnx"), "not a model");
        using var failing = Host(new() { ["ModelPath"] = broken });
        await failing.StartAsync();
        var model = failing.Services.GetRequiredService<OnnxDecoderModel>();
        for (int i = 0; i < 100 && model.LoadError is null; i++) await Task.Delay(20);
        var unhealthy = await failing.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        Assert.That(unhealthy.Status, Is.EqualTo(HealthStatus.Unhealthy));
        Assert.That(unhealthy.Entries["onnxdecoder"].Description, Does.StartWith($"loading {broken} failed: "));
        await failing.StopAsync();
    }

    [Test]
    public async Task A_kv_budget_too_small_for_the_sequences_makes_the_model_unhealthy_with_the_sizes_named()
    {
        using var host = Host(new() { ["ModelPath"] = _model, ["MaxConcurrentSequences"] = "64", ["MaxKvCacheMiB"] = "1" });
        await host.StartAsync();
        var model = host.Services.GetRequiredService<OnnxDecoderModel>();
        for (int i = 0; i < 200 && model.LoadError is null; i++) await Task.Delay(20);
        Assert.That(model.LoadError, Is.Not.Null);
        Assert.That(model.LoadError!.Message, Does.Contain("64 rows x 512 positions").And.Contain("over the budget of 1,048,576: lower MaxSequences or MaxLength"));
        await host.StopAsync();
    }

    [TestCase("ModelPath", "", "The ModelPath field is required")]
    [TestCase("ModelPath", "/nowhere/at/all", "OnnxDecoder:ModelPath '/nowhere/at/all' is not a model folder (no genai_config.json)")]
    [TestCase("MaxConcurrentSequences", "0", "MaxConcurrentSequences must be between 1 and 1024")]
    [TestCase("ExecutionProviders:0", "tpu", "OnnxDecoder:ExecutionProviders 'tpu' is not known: use cpu, cuda or dml")]
    public async Task Invalid_options_stop_the_host_from_starting_with_the_field_named(string key, string value, string message)
    {
        var settings = new Dictionary<string, string?> { ["ModelPath"] = _model, [key] = value };
        using var host = Host(settings);
        var error = (await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync()))!;
        Assert.That(error.Message, Does.Contain(message));
    }
}
