using System.ClientModel;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI;

namespace OnnxDecoder.Server.Tests;

/// <summary>usage.prompt_tokens_details.cached_tokens: the prompt tokens a completion did not run
/// again because the previous prompt on this server began with them.</summary>
[Parallelizable(ParallelScope.None)]
public class CachedTokensTests
{
    private static async Task<JsonObject> Complete(HttpClient http, object body)
    {
        var response = await http.PostAsync("/v1/completions", new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.That(response.IsSuccessStatusCode, Is.True, text);
        return JsonNode.Parse(text)!.AsObject();
    }

    private static int Cached(JsonNode usage) => (int)usage["prompt_tokens_details"]!["cached_tokens"]!;

    /// <summary>Token-id prompts make the expected counts the common prefix of the ids sent, less
    /// the one token always run for its logits.</summary>
    [Test]
    public async Task Cached_tokens_are_the_shared_prefix_of_the_previous_prompt_in_plain_and_streamed_usage()
    {
        var (host, address) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(ServerFixture.Model, sequences: 1));
        using var _ = host;
        using var http = new HttpClient { BaseAddress = address };
        await ErrorTests.WaitReady(http);

        int[] first = [1, 403, 407, 261, 350, 289, 500], extends = [.. first, 301, 302], other = [1, 260, 270];
        var fresh = await Complete(http, new { prompt = first, max_tokens = 3 });
        Assert.That(Cached(fresh["usage"]!), Is.EqualTo(0), "nothing was cached before the first request");

        var extended = await Complete(http, new { prompt = extends, max_tokens = 3 });
        Assert.That(Cached(extended["usage"]!), Is.EqualTo(first.Length));

        var diverged = await Complete(http, new { prompt = other, max_tokens = 3 });
        Assert.That(Cached(diverged["usage"]!), Is.EqualTo(1), "only the BOS is shared");

        // The same prompt again, streamed: every token but the last is reused.
        var response = await http.PostAsync("/v1/completions", new StringContent(
            JsonSerializer.Serialize(new { prompt = other, max_tokens = 3, stream = true, stream_options = new { include_usage = true } }), Encoding.UTF8, "application/json"));
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        var usage = JsonNode.Parse(events[^2]["data: ".Length..])!["usage"]!;
        Assert.That((int)usage["prompt_tokens"]!, Is.EqualTo(other.Length));
        Assert.That(Cached(usage), Is.EqualTo(other.Length - 1));
        await host.StopAsync();
    }

    /// <summary>The official OpenAI client reads the field: a conversation's second turn reuses its first.</summary>
    [Test]
    public async Task The_openai_client_sees_cached_tokens_on_a_follow_up_turn()
    {
        var settings = ServerFixture.Settings(ServerFixture.Model, sequences: 1);
        var (host, address) = await ServerFixture.StartOnLoopback(settings);
        using var _ = host;
        using (var http = new HttpClient { BaseAddress = address }) await ErrorTests.WaitReady(http);
        IChatClient client = new OpenAI.Chat.ChatClient("stories260k", new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(address, "/v1") }).AsIChatClient();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 8 };
        List<ChatMessage> conversation = [new(ChatRole.User, "Once upon a time")];
        var turn1 = await client.GetResponseAsync(conversation, options);
        Assert.That(turn1.Usage!.CachedInputTokenCount ?? 0, Is.EqualTo(0));
        conversation.AddRange(turn1.Messages);
        conversation.Add(new ChatMessage(ChatRole.User, "The little dog"));
        var usage = new UsageDetails();
        await foreach (var update in client.GetStreamingResponseAsync(conversation, options))
            foreach (var content in update.Contents.OfType<UsageContent>()) usage = content.Details;
        Assert.That(usage.InputTokenCount, Is.GreaterThan(turn1.Usage.InputTokenCount!.Value));
        Assert.That(usage.CachedInputTokenCount, Is.GreaterThanOrEqualTo(turn1.Usage.InputTokenCount!.Value - 1),
            "the first turn's prompt is a prefix of the second's");
        await host.StopAsync();
    }
}
