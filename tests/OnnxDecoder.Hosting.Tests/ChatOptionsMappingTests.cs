using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Tests.Shared;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace OnnxDecoder.Hosting.Tests;

/// <summary>The IChatClient maps ChatOptions through the sampling table, over the folder's search defaults.</summary>
[Parallelizable(ParallelScope.None)]
public class ChatOptionsMappingTests
{
    private static string _root = "";
    private static IHost _host = null!;
    private static IChatClient _client = null!;

    [OneTimeSetUp]
    public async Task Start()
    {
        _root = TestPaths.NewTempFolder("chat-options");
        string model = Path.Combine(_root, "stories260k");
        ModelFolderWriter.Export(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, model, new ExportOptions { Lowering = Lowering.Ort });
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(model, "genai_config.json")))!.AsObject();
        config["search"]!["do_sample"] = true;
        config["search"]!["temperature"] = 0.9;
        config["search"]!["top_k"] = 10;
        File.WriteAllText(Path.Combine(model, "genai_config.json"), config.ToJsonString());
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["OnnxDecoder:ModelPath"] = model, ["OnnxDecoder:MaxConcurrentSequences"] = "1" });
        builder.Services.AddOnnxDecoder(builder.Configuration.GetSection(OnnxDecoderOptions.Section));
        _host = builder.Build();
        await _host.StartAsync();
        _client = _host.Services.GetRequiredService<IChatClient>();
    }

    [OneTimeTearDown]
    public async Task Stop()
    {
        await _host.StopAsync();
        _host.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private static async Task<string> Reply(ChatOptions options) =>
        (await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], options)).Text;

    [Test]
    public async Task Options_left_out_take_the_folders_search_values_and_given_ones_override_them()
    {
        string defaults = await Reply(new ChatOptions { Seed = 9, MaxOutputTokens = 30 });
        string same = await Reply(new ChatOptions { Seed = 9, Temperature = 0.9f, TopK = 10, MaxOutputTokens = 30 });
        string greedy = await Reply(new ChatOptions { Temperature = 0, MaxOutputTokens = 30 });
        Assert.That(defaults, Is.EqualTo(same));
        Assert.That(defaults, Is.Not.EqualTo(greedy));
        Assert.That(await Reply(new ChatOptions { TopK = 1, MaxOutputTokens = 30 }), Is.EqualTo(greedy), "top_k 1 is greedy whatever the temperature");
    }

    [Test]
    public async Task Min_p_and_repetition_penalty_come_from_additional_properties_by_their_table_names()
    {
        string greedy = await Reply(new ChatOptions { Temperature = 0, MaxOutputTokens = 40 });
        var penalised = new ChatOptions { Temperature = 0, MaxOutputTokens = 40, AdditionalProperties = new() { ["repetition_penalty"] = 1.8 } };
        Assert.That(await Reply(penalised), Is.Not.EqualTo(greedy), "a strong repetition penalty changes a greedy story");
        // min_p 1 keeps only the most likely token: sampling becomes greedy.
        var minP = new ChatOptions { Temperature = 1.5f, Seed = 3, MaxOutputTokens = 40, AdditionalProperties = new() { ["min_p"] = 1.0 } };
        Assert.That(await Reply(minP), Is.EqualTo(greedy));
    }

    [TestCase("top_p", "ChatOptions.TopP")]
    [TestCase("temperature", "ChatOptions.Temperature")]
    [TestCase("min_p", "ChatOptions.AdditionalProperties[\"min_p\"]")]
    public async Task An_option_outside_the_tables_range_throws_naming_the_option(string name, string option)
    {
        var options = new ChatOptions { MaxOutputTokens = 4 };
        if (name == "top_p") options.TopP = 1.5f;
        else if (name == "temperature") options.Temperature = 3f;
        else options.AdditionalProperties = new() { [name] = 7.0 };
        var error = (await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await Reply(options)))!;
        Assert.That(error.ParamName, Is.EqualTo(option));
        Assert.That(error.Message, Does.Contain("it must be between"));
    }
}
