#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental
using System.ClientModel;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Runtime.Tests.ChatTemplates;
using OnnxDecoder.Runtime.Tests.Constraints;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;
using OpenAI;
using OpenAI.Chat;

namespace OnnxDecoder.Server.Tests;

/// <summary>
/// Tools and structured output through the official OpenAI .NET client against the real server, on a random-weight
/// model with Qwen3's chat template: forced calls are valid calls of the offered functions (judged by
/// python3-jsonschema against each function's parameter schema), streamed deltas reassemble to the same call, a tool
/// result goes back through the template (checked against python3-jinja2's rendering), and json_schema outputs
/// validate while the same prompts without it do not.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class ToolCallingTests
{
    private string _root = "", _model = "";
    private IHost _host = null!;
    private Uri _address = null!;
    private static readonly JsonArray Tools = JsonNode.Parse(ToolModel.ToolsJson)!.AsArray();

    [OneTimeSetUp]
    public async Task Start()
    {
        _root = TestPaths.NewTempFolder("server-tools");
        _model = ToolModel.Create(_root);
        (_host, _address) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(_model, sequences: 4));
        using var http = new HttpClient { BaseAddress = _address };
        await ErrorTests.WaitReady(http);
    }

    [OneTimeTearDown]
    public async Task Stop()
    {
        await _host.StopAsync();
        _host.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private ChatClient Client() =>
        new("synth-qwen-tools", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(_address, "/v1"), NetworkTimeout = TimeSpan.FromMinutes(2) });

    internal static List<ChatTool> ChatTools() =>
        [.. Tools.Select(t => ChatTool.CreateFunctionTool((string)t!["function"]!["name"]!, (string?)t["function"]!["description"],
            BinaryData.FromString(t["function"]!["parameters"]!.ToJsonString())))];

    internal static string Schema(string function) => Tools.Single(t => (string)t!["function"]!["name"]! == function)!["function"]!["parameters"]!.ToJsonString();

    private static ChatCompletionOptions Options(ChatToolChoice choice, float temperature, long seed, bool parallel = false)
    {
        var options = new ChatCompletionOptions { ToolChoice = choice, Temperature = temperature, Seed = seed, MaxOutputTokenCount = 160, AllowParallelToolCalls = parallel };
        foreach (var tool in ChatTools()) options.Tools.Add(tool);
        return options;
    }

    private static readonly string[] Prompts = ["What is the weather in Paris?", "Add 2 and 40.", "Hello there", "Tell me a story about a dog"];

    [Test]
    public async Task Tool_choice_required_gives_valid_calls_of_offered_functions_greedy_and_sampled()
    {
        var client = Client();
        var judged = new List<(string Schema, string Text)>();
        foreach (var (prompt, index) in Prompts.Select((p, i) => (p, i)))
            foreach (var (temperature, parallel) in new[] { (0f, false), (1f, false), (1f, true) })
            {
                var completion = (await client.CompleteChatAsync([new UserChatMessage(prompt)], Options(ChatToolChoice.CreateRequiredChoice(), temperature, 100 + index, parallel))).Value;
                Assert.That(completion.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls), $"'{prompt}' at temperature {temperature}");
                Assert.That(completion.ToolCalls, Is.Not.Empty);
                if (!parallel) Assert.That(completion.ToolCalls, Has.Count.EqualTo(1), "parallel_tool_calls false allows one call");
                foreach (var call in completion.ToolCalls)
                {
                    Assert.That(call.Id, Does.StartWith("call_"));
                    Assert.That(call.FunctionName, Is.AnyOf("get_weather", "add"));
                    judged.Add((Schema(call.FunctionName), call.FunctionArguments.ToString()));
                    TestContext.Out.WriteLine($"{prompt} t={temperature} parallel={parallel}: {call.FunctionName} {call.FunctionArguments}");
                }
                Assert.That(completion.ToolCalls.Select(c => c.Id).Distinct().Count(), Is.EqualTo(completion.ToolCalls.Count), "call ids are unique");
            }
        PythonJsonSchema.AssertAllValid(judged, "tool_choice required");
    }

    [Test]
    public async Task A_named_function_is_the_one_called_with_arguments_valid_for_its_schema()
    {
        var client = Client();
        var judged = new List<(string Schema, string Text)>();
        foreach (var function in new[] { "get_weather", "add" })
            foreach (var temperature in new[] { 0f, 0.8f, 1.2f })
            {
                var completion = (await client.CompleteChatAsync([new UserChatMessage("Please help")], Options(ChatToolChoice.CreateFunctionChoice(function), temperature, 7))).Value;
                Assert.That(completion.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));
                Assert.That(completion.ToolCalls.Select(c => c.FunctionName), Is.All.EqualTo(function));
                Assert.That(completion.ToolCalls, Has.Count.EqualTo(1), "parallel_tool_calls false allows one call");
                judged.AddRange(completion.ToolCalls.Select(c => (Schema(function), c.FunctionArguments.ToString())));
            }
        PythonJsonSchema.AssertAllValid(judged, "named tool_choice");
    }

    [Test]
    public async Task Streamed_tool_call_deltas_reassemble_to_the_non_streamed_call()
    {
        var client = Client();
        foreach (var parallel in new[] { false, true })
        {
            var options = Options(ChatToolChoice.CreateRequiredChoice(), 0, 1, parallel);
            var whole = (await client.CompleteChatAsync([new UserChatMessage("What is the weather in Oslo?")], options)).Value;

            var names = new SortedDictionary<int, string>();
            var ids = new SortedDictionary<int, string>();
            var arguments = new SortedDictionary<int, System.Text.StringBuilder>();
            OpenAI.Chat.ChatFinishReason? finish = null;
            int argumentDeltas = 0;
            await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage("What is the weather in Oslo?")], options))
            {
                finish ??= update.FinishReason;
                foreach (var delta in update.ToolCallUpdates)
                {
                    if (delta.FunctionName is { } name) names[delta.Index] = name;
                    if (delta.ToolCallId is { } id) ids[delta.Index] = id;
                    if (!arguments.TryGetValue(delta.Index, out var text)) arguments[delta.Index] = text = new();
                    if (delta.FunctionArgumentsUpdate is { } piece && !piece.ToMemory().IsEmpty) { text.Append(piece.ToString()); argumentDeltas++; }
                }
            }
            Assert.That(finish, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));
            Assert.That(names.Values, Is.EqualTo(whole.ToolCalls.Select(c => c.FunctionName)));
            Assert.That(arguments.Values.Select(a => a.ToString()), Is.EqualTo(whole.ToolCalls.Select(c => c.FunctionArguments.ToString())));
            Assert.That(ids.Values, Has.All.StartWith("call_"));
            Assert.That(argumentDeltas, Is.GreaterThan(whole.ToolCalls.Count), "arguments arrive in several deltas");
        }
    }

    [Test]
    public async Task A_conversation_with_a_tool_result_continues_and_the_result_reaches_the_template()
    {
        var client = Client();
        var first = (await client.CompleteChatAsync([new UserChatMessage("What is the weather in Rome?")], Options(ChatToolChoice.CreateFunctionChoice("get_weather"), 0, 3))).Value;
        var call = first.ToolCalls.Single();
        const string result = "{\"temperature\": 21, \"sky\": \"clear\"}";
        List<OpenAI.Chat.ChatMessage> conversation = [new UserChatMessage("What is the weather in Rome?"), new AssistantChatMessage([call]), new ToolChatMessage(call.Id, result)];
        var second = (await client.CompleteChatAsync(conversation, Options(ChatToolChoice.CreateAutoChoice(), 0, 3))).Value;
        Assert.That(second.FinishReason, Is.AnyOf(OpenAI.Chat.ChatFinishReason.Stop, OpenAI.Chat.ChatFinishReason.Length, OpenAI.Chat.ChatFinishReason.ToolCalls));

        // The prompt the server built is python3-jinja2's rendering of Qwen3's template with the call and its result.
        var variables = new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "What is the weather in Rome?" },
                new JsonObject
                {
                    ["role"] = "assistant", ["content"] = "",
                    ["tool_calls"] = new JsonArray(new JsonObject
                    {
                        ["id"] = call.Id, ["type"] = "function",
                        ["function"] = new JsonObject { ["name"] = call.FunctionName, ["arguments"] = JsonNode.Parse(call.FunctionArguments.ToString()) },
                    }),
                },
                new JsonObject { ["role"] = "tool", ["tool_call_id"] = call.Id, ["content"] = result }),
            ["tools"] = Tools.DeepClone(), ["documents"] = null, ["add_generation_prompt"] = true,
        };
        var reference = Jinja2Reference.Render([new TemplateCase("qwen3 tool result", ToolModel.QwenTemplate(), variables)])[0];
        Assert.That(reference.Text, Does.Contain("<tool_response>\n" + result + "\n</tool_response>"));
        var tokenizer = TextTokenizer.Load(_model, null);
        Assert.That(second.Usage.InputTokenCount, Is.EqualTo(tokenizer.Encode(reference.Text!, addBos: false).Length));
    }

    [Test]
    public async Task A_conversation_with_two_rounds_of_tool_results_continues_and_both_results_reach_the_template()
    {
        var client = Client();
        const string question = "Weather in Rome, and 2 plus 40?";
        List<OpenAI.Chat.ChatMessage> conversation = [new UserChatMessage(question)];
        var history = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question });
        var results = new[] { ("get_weather", "{\"temperature\": 21}"), ("add", "42") };
        foreach (var (function, result) in results)
        {
            var round = (await client.CompleteChatAsync(conversation, Options(ChatToolChoice.CreateFunctionChoice(function), 0, 3))).Value;
            Assert.That(round.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls), $"round calling {function}");
            var call = round.ToolCalls.Single();
            Assert.That(call.FunctionName, Is.EqualTo(function));
            PythonJsonSchema.AssertAllValid([(Schema(function), call.FunctionArguments.ToString())], $"round calling {function}");
            conversation.Add(new AssistantChatMessage([call]));
            conversation.Add(new ToolChatMessage(call.Id, result));
            history.Add(new JsonObject
            {
                ["role"] = "assistant", ["content"] = "",
                ["tool_calls"] = new JsonArray(new JsonObject
                {
                    ["id"] = call.Id, ["type"] = "function",
                    ["function"] = new JsonObject
                    {
                        ["name"] = call.FunctionName, ["arguments"] = JsonNode.Parse(call.FunctionArguments.ToString()),
                    },
                }),
            });
            history.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = call.Id, ["content"] = result });
        }
        var last = (await client.CompleteChatAsync(conversation, Options(ChatToolChoice.CreateAutoChoice(), 0, 3))).Value;
        Assert.That(last.FinishReason,
            Is.AnyOf(OpenAI.Chat.ChatFinishReason.Stop, OpenAI.Chat.ChatFinishReason.Length, OpenAI.Chat.ChatFinishReason.ToolCalls));
        Assert.That(last.Usage.OutputTokenCount, Is.GreaterThan(0), "the model continued after the second result");

        // The third prompt is python3-jinja2's rendering of Qwen3's template with both calls and both results.
        var variables = new JsonObject
        {
            ["messages"] = history, ["tools"] = Tools.DeepClone(), ["documents"] = null, ["add_generation_prompt"] = true,
        };
        var reference = Jinja2Reference.Render([new TemplateCase("qwen3 two tool results", ToolModel.QwenTemplate(), variables)])[0];
        foreach (var (_, result) in results) Assert.That(reference.Text, Does.Contain("<tool_response>\n" + result + "\n</tool_response>"));
        Assert.That(last.Usage.InputTokenCount, Is.EqualTo(TextTokenizer.Load(_model, null).Encode(reference.Text!, addBos: false).Length));
    }

    [Test]
    public async Task Telemetry_records_finish_reason_tool_calls_for_a_call_streamed_or_not()
    {
        var finishById = new System.Collections.Concurrent.ConcurrentDictionary<string, string?>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == OnnxDecoder.Hosting.OnnxDecoderTelemetry.Name,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) =>
                System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.GetTagItem("gen_ai.response.id") is string id)
                    finishById[id] = activity.GetTagItem("gen_ai.response.finish_reasons") as string;
            },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        var client = Client();
        var required = Options(ChatToolChoice.CreateRequiredChoice(), 0, 1);
        var call = (await client.CompleteChatAsync([new UserChatMessage("Add 1 and 2")], required)).Value;
        var text = (await client.CompleteChatAsync([new UserChatMessage("Hello")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 8 })).Value;
        string? streamedId = null;
        await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage("Add 1 and 2")], required))
            streamedId ??= update.CompletionId;
        Assert.That(call.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));
        // The span ends just after the reply is written: wait for it a little.
        string[] ids = [call.Id, text.Id, streamedId!];
        for (int wait = 0; wait < 100 && !ids.All(finishById.ContainsKey); wait++) await Task.Delay(50);
        Assert.That(finishById.GetValueOrDefault(call.Id), Is.EqualTo("tool_calls"));
        Assert.That(finishById.GetValueOrDefault(streamedId!), Is.EqualTo("tool_calls"), "streamed");
        Assert.That(finishById.GetValueOrDefault(text.Id),
            Is.EqualTo(text.FinishReason == OpenAI.Chat.ChatFinishReason.Length ? "length" : "stop"));
    }

    [Test]
    public async Task Tool_choice_auto_streamed_reassembles_to_the_non_streamed_reply()
    {
        // With tool_choice auto the reply may be text, calls or both: text streams until the syntax's opening marker could
        // begin; from there the reply is held and its calls are sent as deltas once the reply ends (see README).
        var client = Client();
        int calls = 0;
        foreach (var (prompt, index) in Prompts.Select((p, i) => (p, i)))
        {
            var options = Options(ChatToolChoice.CreateAutoChoice(), 0, 1, parallel: index % 2 == 1);
            options.MaxOutputTokenCount = 60;
            var whole = (await client.CompleteChatAsync([new UserChatMessage(prompt)], options)).Value;
            await AssertStreamReassembles(client, prompt, options, whole);
            calls += whole.ToolCalls.Count;
        }
        TestContext.Out.WriteLine($"auto: {calls} calls over {Prompts.Length} prompts");
    }

    /// <summary>Streams the same request and checks that its text, call names, call arguments and finish reason
    /// reassemble to <paramref name="whole"/>, the non-streamed reply.</summary>
    internal static async Task AssertStreamReassembles(ChatClient client, string prompt, ChatCompletionOptions options,
        OpenAI.Chat.ChatCompletion whole)
    {
        var content = new System.Text.StringBuilder();
        var names = new SortedDictionary<int, string>();
        var arguments = new SortedDictionary<int, System.Text.StringBuilder>();
        OpenAI.Chat.ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage(prompt)], options))
        {
            finish ??= update.FinishReason;
            foreach (var part in update.ContentUpdate) content.Append(part.Text);
            foreach (var delta in update.ToolCallUpdates)
            {
                if (delta.FunctionName is { } name) names[delta.Index] = name;
                if (!arguments.TryGetValue(delta.Index, out var piece)) arguments[delta.Index] = piece = new();
                if (delta.FunctionArgumentsUpdate is { } more && !more.ToMemory().IsEmpty) piece.Append(more.ToString());
            }
        }
        string wholeText = whole.Content.Count > 0 ? whole.Content[0].Text : "";
        Assert.That(content.ToString(), Is.EqualTo(wholeText), prompt);
        Assert.That(names.Values, Is.EqualTo(whole.ToolCalls.Select(c => c.FunctionName)), prompt);
        Assert.That(arguments.Values.Select(a => a.ToString()),
            Is.EqualTo(whole.ToolCalls.Select(c => c.FunctionArguments.ToString())), prompt);
        Assert.That(finish, Is.EqualTo(whole.FinishReason), prompt);
    }

    [Test]
    public Task Json_schema_outputs_validate_and_the_same_prompts_without_it_do_not() =>
        JsonSchemaOutputsValidate(Client(), "synth-qwen-tools");

    /// <summary>Every schema of the constraint tests through response_format json_schema (strict), greedy and sampled: each
    /// output validates; the same prompts without response_format give nothing valid; json_object gives an object.</summary>
    public static async Task JsonSchemaOutputsValidate(ChatClient client, string model)
    {
        var constrained = new List<(string Schema, string Text)>();
        var free = new List<(string Schema, string Text)>();
        foreach (var (name, schema) in Schemas.All)
        {
            var message = new UserChatMessage($"Reply in JSON ({name})");
            foreach (var temperature in new[] { 0f, 1f })
            {
                var options = new ChatCompletionOptions
                {
                    Temperature = temperature, Seed = 5, MaxOutputTokenCount = 120,
                    ResponseFormat = OpenAI.Chat.ChatResponseFormat.CreateJsonSchemaFormat(name, BinaryData.FromString(schema), jsonSchemaIsStrict: true),
                };
                var completion = (await client.CompleteChatAsync([message], options)).Value;
                constrained.Add((schema, completion.Content.Count > 0 ? completion.Content[0].Text : ""));
            }
            foreach (var temperature in new[] { 0f, 1f })
            {
                var plain = new ChatCompletionOptions { Temperature = temperature, Seed = 5, MaxOutputTokenCount = 120 };
                var unconstrained = (await client.CompleteChatAsync([message], plain)).Value;
                free.Add((schema, unconstrained.Content.Count > 0 ? unconstrained.Content[0].Text : ""));
            }
        }
        Assert.That(constrained, Has.Count.GreaterThanOrEqualTo(40), "at least 20 schemas, greedy and sampled");
        PythonJsonSchema.AssertAllValid(constrained, $"{model}: response_format json_schema");
        var verdicts = PythonJsonSchema.Judge(free);
        Assert.That(verdicts.Count(v => v is null), Is.Zero,
            $"{model}: without response_format the model's text is not valid JSON for the schema");

        var json = (await client.CompleteChatAsync([new UserChatMessage("Give JSON")],
            new ChatCompletionOptions { Temperature = 1, Seed = 9, MaxOutputTokenCount = 80, ResponseFormat = OpenAI.Chat.ChatResponseFormat.CreateJsonObjectFormat() })).Value;
        PythonJsonSchema.AssertAllValid([("""{"type": "object"}""", json.Content[0].Text)], $"{model}: response_format json_object");
    }

    [TestCase("""{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string", "not": {"const": "a"}}}}}}], "tool_choice": "required"}""",
        "tools[0].function.parameters", "keyword 'not' is not supported")]
    [TestCase("""{"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}""",
        "tool_choice", "names the function 'g', which is not among the tools")]
    [TestCase("""{"tool_choice": "required"}""", "tool_choice", "offers no tools")]
    [TestCase("""{"tools": [{"type": "retrieval"}]}""", "tools[0].type", "must be \"function\"")]
    [TestCase("""{"tools": [{"type": "function", "function": {"name": "f", "parameters": "none"}}]}""", "tools[0].function.parameters", "must be a JSON Schema object")]
    [TestCase("""{"tool_choice": "sometimes"}""", "tool_choice", "use none, auto, required")]
    [TestCase("""{"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"type": "array", "uniqueItems": true}}}}""",
        "response_format.json_schema.schema", "keyword 'uniqueItems' true is not supported")]
    [TestCase("""{"response_format": {"type": "yaml"}}""", "response_format.type", "use text, json_object or json_schema")]
    public async Task Bad_tools_and_schemas_are_400_naming_the_field(string extra, string param, string message)
    {
        var body = JsonNode.Parse(extra)!.AsObject();
        body["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Hi" });
        using var http = new HttpClient { BaseAddress = _address };
        var response = await http.PostAsJsonAsync("/v1/chat/completions", body);
        var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest), error.ToJsonString());
        Assert.That((string?)error["param"], Does.StartWith(param));
        Assert.That((string?)error["message"], Does.Contain(message));
    }

    [Test]
    public async Task A_tool_message_without_its_call_id_and_bad_call_arguments_are_400()
    {
        using var http = new HttpClient { BaseAddress = _address };
        var noId = await http.PostAsJsonAsync("/v1/chat/completions", JsonNode.Parse("""{"messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "content": "42"}]}"""));
        Assert.That(noId.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That((string?)JsonNode.Parse(await noId.Content.ReadAsStringAsync())!["error"]!["param"], Is.EqualTo("messages[1].tool_call_id"));
        var badArguments = await http.PostAsJsonAsync("/v1/chat/completions", JsonNode.Parse("""
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{oops"}}]}]}
            """));
        Assert.That(badArguments.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That((string?)JsonNode.Parse(await badArguments.Content.ReadAsStringAsync())!["error"]!["param"], Is.EqualTo("messages[1].tool_calls[0].function.arguments"));
    }
}
