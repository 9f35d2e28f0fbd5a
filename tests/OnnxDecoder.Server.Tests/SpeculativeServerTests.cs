using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using OnnxDecoder.Hosting;

namespace OnnxDecoder.Server.Tests;

/// <summary>A server started with speculative decoding answers greedy requests with the text a server
/// without it gives, token for token, and its batcher counts the drafts it verified.</summary>
[Parallelizable(ParallelScope.None)]
public class SpeculativeServerTests
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside. Once upon a time, there was a little girl";

    private static async Task<string> Complete(HttpClient http, string prompt, int maxTokens)
    {
        var body = JsonSerializer.Serialize(new { prompt, max_tokens = maxTokens, temperature = 0 });
        var response = await http.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.That(response.IsSuccessStatusCode, Is.True, text);
        return (string)JsonNode.Parse(text)!["choices"]![0]!["text"]!;
    }

    [Test]
    public async Task Completions_with_speculation_return_the_text_of_a_server_without_it()
    {
        string[] prompts = [Prompt, "The sun was hot. The sun was hot. The sun", "Tom had a red ball. He liked to"];
        var expected = new List<string>();
        var (plainHost, plainAddress) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(ServerFixture.Model, sequences: 2));
        using (plainHost)
        using (var http = new HttpClient { BaseAddress = plainAddress })
        {
            await ErrorTests.WaitReady(http);
            foreach (var prompt in prompts) expected.Add(await Complete(http, prompt, 48));
            await plainHost.StopAsync();
        }

        var settings = ServerFixture.Settings(ServerFixture.Model, sequences: 2);
        settings["OnnxDecoder:Speculative"] = "ngram";
        settings["OnnxDecoder:DraftTokens"] = "4";
        var (host, address) = await ServerFixture.StartOnLoopback(settings);
        using var _ = host;
        using var client = new HttpClient { BaseAddress = address };
        await ErrorTests.WaitReady(client);
        for (int i = 0; i < prompts.Length; i++)
            Assert.That(await Complete(client, prompts[i], 48), Is.EqualTo(expected[i]), $"prompt {i}");
        // Concurrent requests too: rows verify alone or decode in the shared step, the text stays.
        var together = await Task.WhenAll(prompts.Select(p => Complete(client, p, 48)));
        Assert.That(together, Is.EqualTo(expected));
        var batcher = host.Services.GetRequiredService<OnnxDecoderModel>().Batcher!;
        Assert.That(batcher.Speculative, Is.EqualTo("ngram"));
        Assert.That(batcher.AcceptedDraftTokens, Is.GreaterThan(0), "the server verified drafts");
        Assert.That(batcher.AcceptedDraftTokens, Is.LessThanOrEqualTo(batcher.DraftedTokens));
        await host.StopAsync();
    }

    [Test]
    public async Task A_speculative_setting_that_is_neither_ngram_nor_a_model_folder_fails_at_start_naming_it()
    {
        var settings = ServerFixture.Settings(ServerFixture.Model, sequences: 1);
        settings["OnnxDecoder:Speculative"] = "/no/such/draft";
        Exception? error = null;
        try
        {
            var (host, _) = await ServerFixture.StartOnLoopback(settings);
            host.Dispose();
        }
        catch (Exception e) { error = e; }
        Assert.That(error, Is.Not.Null, "the server started with a drafter that does not exist");
        Assert.That(error!.Message, Does.Contain("/no/such/draft").And.Contain("ngram"));
    }
}
