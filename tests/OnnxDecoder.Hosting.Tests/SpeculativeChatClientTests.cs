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

/// <summary>The IChatClient over a model configured with speculative decoding answers greedy chats as one
/// without it does; ChatOptions.AdditionalProperties["speculative"] = false turns it off for one call.</summary>
[Parallelizable(ParallelScope.None)]
public class SpeculativeChatClientTests
{
    private static string _root = "", _model = "";

    [OneTimeSetUp]
    public void Export()
    {
        _root = TestPaths.NewTempFolder("hosting-speculative");
        _model = Path.Combine(_root, "stories260k");
        ModelFolderWriter.Export(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, _model, new ExportOptions { Lowering = Lowering.Ort });
    }

    [OneTimeTearDown] public void Delete() => Directory.Delete(_root, recursive: true);

    private static async Task<IHost> Started(string? speculative)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["OnnxDecoder:ModelPath"] = _model, ["OnnxDecoder:MaxConcurrentSequences"] = "2",
            ["OnnxDecoder:Speculative"] = speculative, ["OnnxDecoder:DraftTokens"] = "4",
        });
        builder.Services.AddOnnxDecoder(builder.Configuration.GetSection(OnnxDecoderOptions.Section));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [Test]
    public async Task A_speculative_chat_client_replies_as_a_plain_one_and_one_call_can_opt_out()
    {
        List<ChatMessage> messages = [new(ChatRole.User, "Once upon a time, there was a little girl named Lily. Once upon a time, there was a little girl")];
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 40 };
        string expected;
        using (var plain = await Started(null))
        {
            expected = (await plain.Services.GetRequiredService<IChatClient>().GetResponseAsync(messages, options)).Text;
            await plain.StopAsync();
        }
        using var host = await Started("ngram");
        var client = host.Services.GetRequiredService<IChatClient>();
        var batcher = host.Services.GetRequiredService<OnnxDecoderModel>();
        var fast = await client.GetResponseAsync(messages, options);
        Assert.That(fast.Text, Is.EqualTo(expected));
        long drafted = batcher.Batcher!.DraftedTokens;
        Assert.That(drafted, Is.GreaterThan(0), "the chat decoded speculatively");

        var optedOut = await client.GetResponseAsync(messages, new ChatOptions { Temperature = 0, MaxOutputTokens = 40, AdditionalProperties = new() { ["speculative"] = false } });
        Assert.That(optedOut.Text, Is.EqualTo(expected));
        Assert.That(batcher.Batcher.DraftedTokens, Is.EqualTo(drafted), "speculative = false drafted nothing");

        var streamed = new System.Text.StringBuilder();
        await foreach (var update in client.GetStreamingResponseAsync(messages, options)) streamed.Append(update.Text);
        Assert.That(streamed.ToString(), Is.EqualTo(expected));

        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(messages, new ChatOptions { AdditionalProperties = new() { ["speculative"] = "no" } }));
        await host.StopAsync();
    }
}
