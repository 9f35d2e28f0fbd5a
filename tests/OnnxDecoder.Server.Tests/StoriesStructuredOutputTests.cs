using System.ClientModel;
using Microsoft.Extensions.Hosting;
using OpenAI;
using OnnxDecoder.Runtime.Tests.Constraints;
using OpenAI.Chat;

namespace OnnxDecoder.Server.Tests;

/// <summary>
/// response_format json_schema through the official OpenAI .NET client on stories260K (SentencePiece with byte
/// fallback, no chat template, never saw JSON): the same schemas and checks as on the tool model.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class StoriesStructuredOutputTests
{
    [Test]
    public async Task Json_schema_outputs_validate_on_stories260K_and_the_same_prompts_without_it_do_not()
    {
        var (host, address) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(ServerFixture.Model, sequences: 2));
        try
        {
            using (var http = new HttpClient { BaseAddress = address }) await ErrorTests.WaitReady(http);
            var client = new ChatClient("stories260k", new ApiKeyCredential("unused"),
                new OpenAIClientOptions { Endpoint = new Uri(address, "/v1"), NetworkTimeout = TimeSpan.FromMinutes(2) });
            await ToolCallingTests.JsonSchemaOutputsValidate(client, "stories260K");
            await AutoCallStreams(client);
        }
        finally
        {
            await host.StopAsync();
            host.Dispose();
        }
    }

    // stories260K has no chat template, so its replies are parsed in the generic JSON form (the reply is the call object).
    // With tool_choice auto nothing forces a call; a response_format schema of the call's shape makes the reply one, so the
    // auto path's streaming (held from the first '{', sent as tool-call deltas at the end) is exercised with a real call.
    private static async Task AutoCallStreams(ChatClient client)
    {
        string callSchema = $$"""
            {"type": "object", "properties": {"name": {"const": "add"}, "arguments": {{ToolCallingTests.Schema("add")}}},
             "required": ["name", "arguments"], "additionalProperties": false}
            """;
        var judged = new List<(string Schema, string Text)>();
        foreach (var (temperature, seed) in new[] { (0f, 1L), (1f, 2L), (1f, 3L) })
        {
#pragma warning disable OPENAI001 // Seed is marked experimental
            var options = new ChatCompletionOptions
            {
                ToolChoice = ChatToolChoice.CreateAutoChoice(), Temperature = temperature, Seed = seed, MaxOutputTokenCount = 80,
                ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("call", BinaryData.FromString(callSchema),
                    jsonSchemaIsStrict: true),
            };
#pragma warning restore OPENAI001
            // Only the one function: the folded tool text must fit stories260K's 512 positions.
            options.Tools.Add(ToolCallingTests.ChatTools().Single(t => t.FunctionName == "add"));
            const string prompt = "Add 2 and 40.";
            var whole = (await client.CompleteChatAsync([new UserChatMessage(prompt)], options)).Value;
            Assert.That(whole.FinishReason, Is.EqualTo(ChatFinishReason.ToolCalls), $"temperature {temperature}");
            Assert.That(whole.ToolCalls.Select(c => c.FunctionName), Is.EqualTo(new[] { "add" }));
            judged.Add((ToolCallingTests.Schema("add"), whole.ToolCalls[0].FunctionArguments.ToString()));
            await ToolCallingTests.AssertStreamReassembles(client, prompt, options, whole);
        }
        PythonJsonSchema.AssertAllValid(judged, "auto call arguments");
    }
}
