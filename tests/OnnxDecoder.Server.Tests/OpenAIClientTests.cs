using System.ClientModel;
using System.Diagnostics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Hosting;
using OpenAI;

namespace OnnxDecoder.Server.Tests;

/// <summary>The official OpenAI .NET client (through Microsoft.Extensions.AI.OpenAI) against the
/// real server on loopback.</summary>
[Parallelizable(ParallelScope.None)]
public class OpenAIClientTests
{
    private static IChatClient Client(Uri address, string model = "stories260k") =>
        new OpenAI.Chat.ChatClient(model, new ApiKeyCredential("test-key"), new OpenAIClientOptions { Endpoint = new Uri(address, "/v1"), NetworkTimeout = TimeSpan.FromMinutes(2) }).AsIChatClient();

    private static async Task<(IHost, Uri)> Started(int sequences)
    {
        var settings = ServerFixture.Settings(ServerFixture.Model, sequences: sequences);
        settings[OnnxDecoderServer.ApiKeySetting] = "test-key"; // the client sends its key as a bearer token
        var (host, address) = await ServerFixture.StartOnLoopback(settings);
        using var http = new HttpClient { BaseAddress = address };
        await ErrorTests.WaitReady(http);
        return (host, address);
    }

    [Test]
    public async Task Greedy_output_through_the_openai_client_equals_generate_streaming_and_not()
    {
        var (host, address) = await Started(sequences: 4);
        using var _ = host;
        var client = Client(address);
        var expected = ServerFixture.Greedy("Once upon a time", 40);

        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { Temperature = 0, MaxOutputTokens = 40 });
        Assert.That(response.Text, Is.EqualTo(expected.Text));
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.Length));
        Assert.That(response.Usage!.InputTokenCount, Is.EqualTo(5));
        Assert.That(response.Usage.OutputTokenCount, Is.EqualTo(40));
        Assert.That(response.ModelId, Is.EqualTo("stories260k"));

        var streamed = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { Temperature = 0, MaxOutputTokens = 40 }))
        {
            streamed.Append(update.Text);
            finish ??= update.FinishReason;
        }
        Assert.That(streamed.ToString(), Is.EqualTo(expected.Text));
        Assert.That(finish, Is.EqualTo(ChatFinishReason.Length));

        var stopped = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], new ChatOptions { Temperature = 0, MaxOutputTokens = 100, StopSequences = ["Lily."] });
        Assert.That(stopped.Text, Is.EqualTo(", there was a little girl named "));
        Assert.That(stopped.FinishReason, Is.EqualTo(ChatFinishReason.Stop));

        var seeded = new ChatOptions { Temperature = 1, Seed = 7, MaxOutputTokens = 30 };
        var a = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], seeded);
        var b = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Once upon a time")], seeded);
        Assert.That(b.Text, Is.EqualTo(a.Text), "same seed, same text");

        Assert.That(async () => await Client(address, "gpt-4o").GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")]),
            Throws.InstanceOf<ClientResultException>().With.Property("Status").EqualTo(400).And.Message.Contains("the model 'gpt-4o' does not exist"));
        await host.StopAsync();
    }

    /// <summary>
    /// Bounded load: 16 concurrent streaming clients x 20 requests on 8 batched sequences. Every
    /// response must be complete and equal that prompt's greedy output alone; the process's memory
    /// after the run must be within 10% of before (after a warm-up round).
    /// </summary>
    [Test]
    public async Task Sixteen_streaming_clients_times_twenty_requests_all_get_their_single_request_output_and_memory_stays_flat()
    {
        string[] prompts = ["Once upon a time", "The little dog", "One day, Lily went to the park", "Tom and his friend", "The sun was hot", "A big red ball", "She was sad because", "Every morning the cat"];
        int[] lengths = [48, 32, 40, 24, 56, 36, 44, 28];
        var expected = prompts.Select((p, i) => ServerFixture.Greedy(p, lengths[i]).Text).ToArray();

        var (host, address) = await Started(sequences: 8);
        using var _ = host;
        var client = Client(address);
        async Task<(int Prompt, string Text, ChatFinishReason? Finish)> One(int prompt)
        {
            var text = new System.Text.StringBuilder();
            ChatFinishReason? finish = null;
            await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, prompts[prompt])], new ChatOptions { Temperature = 0, MaxOutputTokens = lengths[prompt] }))
            {
                text.Append(update.Text);
                finish ??= update.FinishReason;
            }
            return (prompt, text.ToString(), finish);
        }
        async Task<List<(int Prompt, string Text, ChatFinishReason? Finish)>> Clients(int clients, int requests) =>
            (await Task.WhenAll(Enumerable.Range(0, clients).Select(async c =>
            {
                var results = new List<(int, string, ChatFinishReason?)>();
                for (int r = 0; r < requests; r++) results.Add(await One((c + r) % prompts.Length));
                return results;
            }))).SelectMany(r => r).ToList();

        await Clients(16, 2); // warm-up: thread pool, HTTP connections, every code path once
        long before = SettledMemory();
        var clock = Stopwatch.StartNew();
        var all = await Clients(16, 20);
        clock.Stop();
        long after = SettledMemory();

        Assert.That(all, Has.Count.EqualTo(320));
        foreach (var (prompt, text, finish) in all)
        {
            Assert.That(finish, Is.Not.Null, "every stream ended with a finish reason (not truncated)");
            Assert.That(text, Is.EqualTo(expected[prompt]), $"prompt '{prompts[prompt]}'");
        }
        TestContext.Out.WriteLine($"320 streaming requests in {clock.Elapsed.TotalSeconds:F1} s; working set {before / 1e6:F1} -> {after / 1e6:F1} MB ({(after - before) * 100.0 / before:+0.0;-0.0}%)");
        Assert.That(after, Is.LessThanOrEqualTo(before * 1.10), $"working set grew from {before:N0} to {after:N0} bytes");
        await host.StopAsync();
    }

    private static long SettledMemory()
    {
        for (int i = 0; i < 3; i++)
        {
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }
        using var self = Process.GetCurrentProcess();
        return self.WorkingSet64;
    }
}
