#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental
using System.ClientModel;
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
/// Tools through the official OpenAI .NET client against the real server on a random-weight model with Qwen3-Coder's
/// real chat template (XML calls): the prompt is python3-jinja2's rendering of that template with the tools, forced
/// calls come back as tool calls (not XML text) whose arguments python3-jsonschema accepts, typed by the schema
/// (integers, booleans, objects, arrays as JSON), and streamed deltas reassemble to the non-streamed calls.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class Qwen3CoderToolCallingTests
{
    private const string ModelName = "synth-qwen3-coder-tools";
    private const string ToolsJson = """
        [{"type": "function", "function": {"name": "run_command", "description": "Runs a shell command",
          "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"},
            "dry_run": {"type": "boolean"}, "env": {"type": "object", "properties": {"CI": {"type": "string"}}}},
            "required": ["command", "timeout", "dry_run"]}}},
         {"type": "function", "function": {"name": "write_file", "description": "Writes a file",
          "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "lines": {"type": "array", "items": {"type": "integer"}},
            "content": {"type": "string"}}, "required": ["path", "lines", "content"]}}}]
        """;
    private static readonly JsonArray Tools = JsonNode.Parse(ToolsJson)!.AsArray();
    private string _root = "", _model = "", _template = "";
    private IHost _host = null!;
    private Uri _address = null!;

    [OneTimeSetUp]
    public async Task Start()
    {
        _root = TestPaths.NewTempFolder("server-qwen3-coder-tools");
        _template = TemplateCorpus.Load(TestPaths.RepoRoot).FirstOrDefault(t => t.Name.Contains("qwen3-coder", StringComparison.Ordinal))?.Source
            ?? throw new AssertionException("no qwen3-coder template in @huggingface/ollama-utils: .ci/run installs it into artifacts/npm-templates");
        _model = ToolModel.Create(_root, _template, ModelName, positions: 4096);
        (_host, _address) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(_model, sequences: 2));
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
        new(ModelName, new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(_address, "/v1"), NetworkTimeout = TimeSpan.FromMinutes(2) });

    private static string Schema(string function) => Tools.Single(t => (string)t!["function"]!["name"]! == function)!["function"]!["parameters"]!.ToJsonString();

    private static ChatCompletionOptions Options(ChatToolChoice choice, bool parallel)
    {
        var options = new ChatCompletionOptions { ToolChoice = choice, Temperature = 0, Seed = 5, MaxOutputTokenCount = 200, AllowParallelToolCalls = parallel };
        foreach (var tool in Tools)
            options.Tools.Add(ChatTool.CreateFunctionTool((string)tool!["function"]!["name"]!, (string?)tool["function"]!["description"],
                BinaryData.FromString(tool["function"]!["parameters"]!.ToJsonString())));
        return options;
    }

    [Test]
    public async Task Forced_xml_calls_are_tool_calls_valid_for_their_schemas_and_stream_to_the_same_calls()
    {
        var client = Client();
        var judged = new List<(string Schema, string Text)>();
        var choices = new (ChatToolChoice Choice, bool Parallel)[]
        {
            (ChatToolChoice.CreateRequiredChoice(), false), (ChatToolChoice.CreateRequiredChoice(), true), (ChatToolChoice.CreateFunctionChoice("write_file"), false),
        };
        foreach (var (choice, parallel) in choices)
        {
            const string prompt = "Run the tests, then write the report.";
            var whole = (await client.CompleteChatAsync([new UserChatMessage(prompt)], Options(choice, parallel))).Value;
            Assert.That(whole.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));
            Assert.That(whole.Content, Is.Empty, "the XML is read as calls, not returned as text");
            Assert.That(whole.ToolCalls, Is.Not.Empty);
            if (!parallel) Assert.That(whole.ToolCalls, Has.Count.EqualTo(1));
            foreach (var call in whole.ToolCalls)
            {
                Assert.That(call.FunctionName, Is.AnyOf("run_command", "write_file"));
                judged.Add((Schema(call.FunctionName), call.FunctionArguments.ToString()));
                TestContext.Out.WriteLine($"parallel={parallel}: {call.FunctionName} {call.FunctionArguments}");
            }

            var names = new SortedDictionary<int, string>();
            var arguments = new SortedDictionary<int, System.Text.StringBuilder>();
            await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage(prompt)], Options(choice, parallel)))
                foreach (var delta in update.ToolCallUpdates)
                {
                    if (delta.FunctionName is { } name) names[delta.Index] = name;
                    if (!arguments.TryGetValue(delta.Index, out var text)) arguments[delta.Index] = text = new();
                    if (delta.FunctionArgumentsUpdate is { } piece && !piece.ToMemory().IsEmpty) text.Append(piece.ToString());
                }
            Assert.That(names.Values, Is.EqualTo(whole.ToolCalls.Select(c => c.FunctionName)), "streamed names");
            Assert.That(arguments.Values.Select(a => a.ToString()), Is.EqualTo(whole.ToolCalls.Select(c => c.FunctionArguments.ToString())), "streamed arguments");
        }
        PythonJsonSchema.AssertAllValid(judged, "Qwen3-Coder forced calls");

        // The prompt the server built is python3-jinja2's rendering of Qwen3-Coder's template with the tools.
        var variables = new JsonObject
        {
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Run the tests, then write the report." }),
            ["tools"] = Tools.DeepClone(), ["add_generation_prompt"] = true,
        };
        var reference = Jinja2Reference.Render([new TemplateCase("qwen3-coder tools", _template, variables)])[0];
        Assert.That(reference.Text, Does.Contain("<function=example_function_name>"));
        var again = (await client.CompleteChatAsync([new UserChatMessage("Run the tests, then write the report.")], Options(ChatToolChoice.CreateRequiredChoice(), false))).Value;
        Assert.That(again.Usage.InputTokenCount, Is.EqualTo(TextTokenizer.Load(_model, null).Encode(reference.Text!, addBos: false).Length));
    }
}
