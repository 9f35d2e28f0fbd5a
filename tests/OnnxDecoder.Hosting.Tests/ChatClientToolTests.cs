using System.ComponentModel;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tests.Constraints;
using OnnxDecoder.Tests.Shared;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace OnnxDecoder.Hosting.Tests;

/// <summary>
/// The IChatClient with tools and response formats on a random-weight model with Qwen3's chat template: a forced
/// call is FunctionCallContent valid for the function's schema (python3-jsonschema), Microsoft.Extensions.AI's
/// UseFunctionInvocation() calls a real C# function with the model's arguments and feeds its result back, and
/// ResponseFormat.ForJsonSchema outputs validate.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class ChatClientToolTests
{
    private string _root = "";
    private IHost _host = null!, _storiesHost = null!;
    private IChatClient _client = null!, _stories = null!;

    [OneTimeSetUp]
    public async Task Start()
    {
        _root = TestPaths.NewTempFolder("hosting-tools");
        (_host, _client) = await StartHost(ToolModel.Create(_root));
        string stories = Path.Combine(_root, "stories260k");
        ModelFolderWriter.Export(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, stories,
            new ExportOptions { Lowering = Lowering.Ort });
        (_storiesHost, _stories) = await StartHost(stories);
    }

    private static async Task<(IHost, IChatClient)> StartHost(string model)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["OnnxDecoder:ModelPath"] = model, ["OnnxDecoder:MaxConcurrentSequences"] = "2" });
        builder.Services.AddOnnxDecoder(builder.Configuration.GetSection(OnnxDecoderOptions.Section));
        var host = builder.Build();
        await host.StartAsync();
        return (host, host.Services.GetRequiredService<IChatClient>());
    }

    [OneTimeTearDown]
    public async Task Stop()
    {
        foreach (var host in new[] { _host, _storiesHost })
        {
            await host.StopAsync();
            host.Dispose();
        }
        Directory.Delete(_root, recursive: true);
    }

    private sealed class Forecasts
    {
        public List<(string City, int Days)> Calls { get; } = [];

        [System.ComponentModel.Description("The weather forecast for a city")]
        public string Forecast([System.ComponentModel.Description("City name")] string city, [System.ComponentModel.Description("Days ahead")] int days)
        {
            Calls.Add((city, days));
            return $"sunny in {city} for {days} days";
        }
    }

    [Test]
    public async Task Under_UseFunctionInvocation_a_real_function_is_called_with_the_models_arguments_and_its_result_fed_back()
    {
        var forecasts = new Forecasts();
        var function = AIFunctionFactory.Create(forecasts.Forecast, "get_forecast");
        using var client = _client.AsBuilder().UseFunctionInvocation().Build();
        var options = new ChatOptions { Tools = [function], ToolMode = ChatToolMode.RequireSpecific("get_forecast"), Temperature = 0, MaxOutputTokens = 160 };

        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Forecast for Lisbon, 3 days")], options);

        Assert.That(forecasts.Calls, Is.Not.Empty, "the C# function ran");
        var call = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().First();
        Assert.That(call.Name, Is.EqualTo("get_forecast"));
        Assert.That(forecasts.Calls[0].City, Is.EqualTo(((JsonElement)call.Arguments!["city"]!).GetString()), "called with the model's arguments");
        Assert.That(forecasts.Calls[0].Days, Is.EqualTo(((JsonElement)call.Arguments["days"]!).GetInt32()));
        var result = response.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().First();
        Assert.That(result.CallId, Is.EqualTo(call.CallId));
        Assert.That(result.Result?.ToString(), Does.Contain($"sunny in {forecasts.Calls[0].City}"));
        Assert.That(response.Messages[^1].Role, Is.EqualTo(ChatRole.Assistant), "the model answered after the result came back");
        // After a call the middleware asks again without forcing one (a required mode would loop): the model answers in text.
        Assert.That(forecasts.Calls, Has.Count.EqualTo(1));
        Assert.That(response.Messages[^1].Contents.OfType<FunctionCallContent>(), Is.Empty);
        Assert.That(response.Text, Is.Not.Empty);
        PythonJsonSchema.AssertAllValid([(function.JsonSchema.GetRawText(), JsonSerializer.Serialize(call.Arguments))], "function arguments");
    }

    [Test]
    public async Task ToolMode_RequireAny_gives_function_call_content_streamed_and_not_alike()
    {
        var forecast = AIFunctionFactory.Create((string city, int days) => "", "get_forecast", "Forecast");
        var time = AIFunctionFactory.Create((string timezone) => "", "get_time", "Time in a zone");
        var options = new ChatOptions { Tools = [forecast, time], ToolMode = ChatToolMode.RequireAny, Temperature = 0, MaxOutputTokens = 160, AllowMultipleToolCalls = false };
        var finishReasons = new System.Collections.Concurrent.ConcurrentQueue<string?>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == OnnxDecoderTelemetry.Name,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) =>
                System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.GetTagItem("gen_ai.request.model") as string == "synth-qwen-tools")
                    finishReasons.Enqueue(activity.GetTagItem("gen_ai.response.finish_reasons") as string);
            },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        var response = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "What time is it in Tokyo?")], options);
        var calls = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().ToList();
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.ToolCalls));
        Assert.That(calls, Has.Count.EqualTo(1));
        var schema = calls[0].Name == "get_forecast" ? forecast.JsonSchema : time.JsonSchema;
        PythonJsonSchema.AssertAllValid([(schema.GetRawText(), JsonSerializer.Serialize(calls[0].Arguments))], "RequireAny call");

        var streamed = new List<FunctionCallContent>();
        ChatFinishReason? finish = null;
        await foreach (var update in _client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "What time is it in Tokyo?")], options))
        {
            streamed.AddRange(update.Contents.OfType<FunctionCallContent>());
            finish ??= update.FinishReason;
        }
        Assert.That(finish, Is.EqualTo(ChatFinishReason.ToolCalls));
        Assert.That(finishReasons, Is.EqualTo(new[] { "tool_calls", "tool_calls" }), "the telemetry span of each call, streamed or not");
        Assert.That(streamed.Select(c => (c.Name, JsonSerializer.Serialize(c.Arguments))), Is.EqualTo(calls.Select(c => (c.Name, JsonSerializer.Serialize(c.Arguments)))));
    }

    [TestCase("synth-qwen-tools")]
    [TestCase("stories260K")]
    public async Task ResponseFormat_json_schema_outputs_validate_and_the_same_prompts_without_it_do_not(string model)
    {
        var client = model == "stories260K" ? _stories : _client;
        var cases = new List<(string Schema, string Text)>();
        var free = new List<(string Schema, string Text)>();
        foreach (var (name, schema) in Schemas.All)
        {
            using var document = JsonDocument.Parse(schema);
            var format = ChatResponseFormat.ForJsonSchema(document.RootElement.Clone(), name);
            var message = new ChatMessage(ChatRole.User, $"JSON please ({name})");
            foreach (var temperature in new[] { 0f, 1f })
            {
                var plain = new ChatOptions { Temperature = temperature, Seed = 3, MaxOutputTokens = 100 };
                var constrained = plain.Clone();
                constrained.ResponseFormat = format;
                cases.Add((schema, (await client.GetResponseAsync([message], constrained)).Text));
                free.Add((schema, (await client.GetResponseAsync([message], plain)).Text));
            }
        }
        Assert.That(cases, Has.Count.GreaterThanOrEqualTo(40), "at least 20 schemas, greedy and sampled");
        PythonJsonSchema.AssertAllValid(cases, $"{model}: ChatResponseFormat.ForJsonSchema");
        Assert.That(PythonJsonSchema.Judge(free).Count(v => v is null), Is.Zero,
            $"{model}: without ResponseFormat the text is not valid JSON for the schema");
        var json = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "JSON please")],
            new ChatOptions { ResponseFormat = ChatResponseFormat.Json, Temperature = 1, Seed = 4, MaxOutputTokens = 80 });
        PythonJsonSchema.AssertAllValid([("""{"type": "object"}""", json.Text)], $"{model}: ChatResponseFormat.Json");
    }

    [Test]
    public async Task ResponseFormat_Json_gives_an_object_and_ToolMode_None_leaves_text()
    {

        var json = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "JSON please")], new ChatOptions { ResponseFormat = ChatResponseFormat.Json, Temperature = 1, Seed = 4, MaxOutputTokens = 80 });
        PythonJsonSchema.AssertAllValid([("""{"type": "object"}""", json.Text)], "ChatResponseFormat.Json");

        var none = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "Forecast?")],
            new ChatOptions { Tools = [AIFunctionFactory.Create((string city) => "", "get_forecast")], ToolMode = ChatToolMode.None, Temperature = 0, MaxOutputTokens = 30 });
        Assert.That(none.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>(), Is.Empty);
        Assert.That(none.Text, Is.Not.Empty);
    }

    [Test]
    public async Task A_named_function_that_is_not_offered_is_refused_naming_tool_choice()
    {
        var options = new ChatOptions { Tools = [AIFunctionFactory.Create((string city) => "", "get_forecast")], ToolMode = ChatToolMode.RequireSpecific("nope") };
        var error = await Assert.ThrowsAsync<ChatRequestException>(async () => await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], options));
        Assert.That(error!.Field, Is.EqualTo("tool_choice"));
        Assert.That(error.Message, Does.Contain("'nope'"));
    }
}
