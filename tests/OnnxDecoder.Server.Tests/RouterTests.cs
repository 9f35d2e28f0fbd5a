using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxDecoder.Router;

namespace OnnxDecoder.Server.Tests;

/// <summary>
/// Three `serve` replicas behind the router, all on 127.0.0.1: conversation affinity against
/// round-robin, measured on the same traffic shape in one run, then a replica killed mid-run.
/// Traffic is bounded: 3 phases x 30 conversations x 3 turns, 6 conversations at a time, 12 tokens each; 16 rows per
/// replica, so a replica's prefix cache holds the conversations routed to it.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class RouterTests
{
    private const int Conversations = 30, Turns = 3, AtOnce = 6, MaxTokens = 12;
    private static readonly string[] Openers = ["Once upon a time", "The little dog", "Lily went to the park", "Tom and his friend", "The sun was hot",
        "A big red ball", "She was sad because", "Every morning the cat", "The old tree", "Ben had a toy"];
    private static readonly string[] FollowUps = ["What happened next?", "Then what did they do?", "How did it end?"];

    /// <summary>One turn as the client saw it. ResponseBegan: a success status and headers arrived. Status 0: the
    /// connection broke with no status, which a client cannot tell from a cut stream: when a replica dies just after
    /// the router forwarded its first bytes, YARP aborts the client connection (TCP RST) and the RST discards bytes
    /// the client had not read yet, headers included.</summary>
    private sealed record TurnResult(int Conversation, int Turn, HttpStatusCode Status, bool ResponseBegan, bool Completed,
        int PromptTokens, int CachedTokens, string Text, bool SentAfterKill);

    private static async Task<(WebApplication App, HttpClient Client)> StartRouter(IReadOnlyList<Uri> replicas, Affinity affinity)
    {
        var options = new RouterOptions
        {
            Backends = replicas, Affinity = affinity,
            HealthInterval = TimeSpan.FromMilliseconds(500), ReactivationPeriod = TimeSpan.FromMinutes(5),
        };
        var app = OnnxDecoderRouter.Build(options, "http://127.0.0.1:0", logging => logging.SetMinimumLevel(LogLevel.Critical));
        await app.StartAsync();
        var client = new HttpClient { BaseAddress = new Uri(app.Urls.Single()), Timeout = TimeSpan.FromSeconds(60) };
        return (app, client);
    }

    /// <summary>One streamed chat turn through the router, with usage; records what reached the client.</summary>
    private static async Task<TurnResult> Turn(HttpClient client, int conversation, int turn, List<object> messages, Func<bool> killed)
    {
        bool afterKill = killed();
        var body = JsonSerializer.Serialize(new { messages, max_tokens = MaxTokens, temperature = 0, stream = true, stream_options = new { include_usage = true } });
        bool began = false;
        var text = new StringBuilder();
        HttpStatusCode status = 0;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            status = response.StatusCode;
            if (!response.IsSuccessStatusCode) return new(conversation, turn, status, false, false, 0, 0, await response.Content.ReadAsStringAsync(), afterKill);
            began = true;
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            int prompt = 0, cached = 0;
            while (await reader.ReadLineAsync() is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                string data = line["data: ".Length..];
                if (data == "[DONE]") return new(conversation, turn, status, true, true, prompt, cached, text.ToString(), afterKill);
                var chunk = JsonNode.Parse(data)!;
                foreach (var choice in chunk["choices"]!.AsArray()) text.Append((string?)choice!["delta"]?["content"]);
                if (chunk["usage"] is JsonObject usage)
                {
                    prompt = (int)usage["prompt_tokens"]!;
                    cached = (int)usage["prompt_tokens_details"]!["cached_tokens"]!;
                }
            }
            return new(conversation, turn, status, true, false, prompt, cached, text.ToString(), afterKill); // cut mid-stream
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            return new(conversation, turn, status, began, false, 0, 0, e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message, afterKill);
        }
    }

    /// <summary>30 conversations of 3 turns, 6 at a time; a turn whose connection broke (after its response began,
    /// or with no status at all) is asked again (at most twice), as a client would. <paramref name="onProgress"/> sees the count of finished turns.</summary>
    private static async Task<List<TurnResult>> Run(HttpClient client, string tag, Func<bool> killed, Action<int>? onProgress = null)
    {
        var results = new ConcurrentBag<TurnResult>();
        int finished = 0;
        using var gate = new SemaphoreSlim(AtOnce);
        var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var tasks = Enumerable.Range(0, Conversations).Select(async c =>
        {
            await gate.WaitAsync(deadline.Token);
            try
            {
                var messages = new List<object> { new { role = "user", content = $"{Openers[c % Openers.Length]} ({tag} {c})" } };
                for (int turn = 0; turn < Turns; turn++)
                {
                    TurnResult result;
                    int tries = 0;
                    do
                    {
                        result = await Turn(client, c, turn, messages, killed);
                        results.Add(result);
                    } while (!result.Completed && (result.ResponseBegan || result.Status == 0) && ++tries < 3);
                    if (!result.Completed) return;
                    onProgress?.Invoke(Interlocked.Increment(ref finished));
                    messages.Add(new { role = "assistant", content = result.Text });
                    if (turn + 1 < Turns) messages.Add(new { role = "user", content = FollowUps[turn] });
                }
            }
            finally
            {
                gate.Release();
            }
        });
        await Task.WhenAll(tasks);
        return [.. results];
    }

    /// <summary>Follow-up turns (2 and 3) that completed, and of them the share served with any reused
    /// prefix and the share whose reused prefix covers the whole previous turn's prompt.</summary>
    private static (int FollowUps, double AnyCached, double PreviousPromptCached) Shares(List<TurnResult> results)
    {
        var done = results.Where(r => r.Completed).ToList();
        var followUps = done.Where(r => r.Turn > 0).ToList();
        int covered = followUps.Count(r => done.FirstOrDefault(p => p.Conversation == r.Conversation && p.Turn == r.Turn - 1) is { } previous
            && r.CachedTokens >= previous.PromptTokens - 1);
        return (followUps.Count, followUps.Count(r => r.CachedTokens > 0) / (double)followUps.Count, covered / (double)followUps.Count);
    }

    [Test]
    public async Task Affinity_keeps_follow_ups_on_their_prefix_and_a_killed_replica_costs_no_unanswered_request()
    {
        var replicas = new List<(IHost Host, Uri Address)>();
        try
        {
            for (int i = 0; i < 3; i++) replicas.Add(await ServerFixture.StartOnLoopback(ServerFixture.Settings(ServerFixture.Model, sequences: 16)));
            foreach (var (_, address) in replicas)
            {
                using var http = new HttpClient { BaseAddress = address };
                await ErrorTests.WaitReady(http);
            }
            var addresses = replicas.Select(r => r.Address).ToList();

            var measured = new Dictionary<Affinity, (int, double, double)>();
            foreach (var affinity in new[] { Affinity.Conversation, Affinity.None })
            {
                var (app, client) = await StartRouter(addresses, affinity);
                await using (app)
                using (client)
                {
                    var results = await Run(client, affinity.ToString(), () => false);
                    Assert.That(results.Where(r => !r.Completed), Is.Empty, $"{affinity}: every turn is answered with no replica down");
                    measured[affinity] = Shares(results);
                }
            }
            var (n, anyAffinity, fullAffinity) = measured[Affinity.Conversation];
            var (m, anyRoundRobin, fullRoundRobin) = measured[Affinity.None];
            TestContext.Progress.WriteLine($"router: follow-up turns with cached_tokens > 0: affinity {anyAffinity:P0} of {n}, round-robin {anyRoundRobin:P0} of {m}; " +
                $"with the whole previous prompt cached: affinity {fullAffinity:P0}, round-robin {fullRoundRobin:P0}");
            Assert.That(n, Is.EqualTo(Conversations * (Turns - 1)));
            Assert.That(anyAffinity, Is.GreaterThanOrEqualTo(0.9));
            // Each replica's rows keep finished turns' KV (the prefix cache), so a follow-up that returns to its
            // replica starts from its own earlier turn; round-robin lands on a replica that never saw it 2 times in 3.
            Assert.That(fullAffinity, Is.GreaterThanOrEqualTo(0.9), "affinity: follow-ups reuse their whole previous prompt");
            Assert.That(fullAffinity, Is.GreaterThan(fullRoundRobin), "affinity beats round-robin on whole-prompt reuse");

            // A replica killed once a third of the turns are done: connections refused or reset from then on.
            var (killApp, killClient) = await StartRouter(addresses, Affinity.Conversation);
            await using (killApp)
            using (killClient)
            {
                int killedFlag = 0;
                var kill = new TaskCompletionSource();
                var run = Run(killClient, "kill", () => Volatile.Read(ref killedFlag) == 1, done =>
                {
                    if (done == Conversations * Turns / 3) kill.TrySetResult();
                });
                await Task.WhenAny(kill.Task, run);
                var victim = replicas[0].Host;
                try { await victim.StopAsync(new CancellationToken(canceled: true)); } catch (OperationCanceledException) { }
                Volatile.Write(ref killedFlag, 1);
                victim.Dispose();
                var results = await run;

                // Refused: the router answered with an error status where another replica could have served the request.
                var refused = results.Where(r => !r.Completed && r.Status != 0 && !r.ResponseBegan).ToList();
                var broken = results.Count(r => !r.Completed && (r.ResponseBegan || r.Status == 0));
                TestContext.Progress.WriteLine($"router: kill phase: {results.Count} requests, {results.Count(r => r.SentAfterKill)} sent after the kill, " +
                    $"{broken} connections broken (asked again), {refused.Count} refused with an error status");
                Assert.That(kill.Task.IsCompleted, Is.True, "the replica was killed mid-run");
                Assert.That(refused, Is.Empty, "the router answers no request with an error status while a replica can serve it");
                Assert.That(results.Where(r => r.SentAfterKill && (int)r.Status >= 500), Is.Empty, "no 5xx after the kill");
                Assert.That(results.Count(r => r.Completed), Is.EqualTo(Conversations * Turns), "every conversation finished");
                Assert.That(results.Count(r => r.SentAfterKill), Is.GreaterThan(0));
            }
        }
        finally
        {
            foreach (var (host, _) in replicas.Skip(1))
            {
                await host.StopAsync();
                host.Dispose();
            }
        }
    }

    [Test]
    public async Task A_replica_that_dies_between_its_headers_and_its_first_event_costs_the_client_nothing()
    {
        // The window a killed replica can die in: its stream's 200 and headers sent, no event yet. The fake replica
        // is ready to the probes and answers every chat request that way; YARP has written nothing to the client then.
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Critical);
        await using var dying = builder.Build();
        int dyingRequests = 0;
        dying.MapGet(OnnxDecoderRouter.ReplicaReadyPath, () => Microsoft.AspNetCore.Http.Results.Json(new { status = "Healthy" }));
        dying.MapPost("/v1/chat/completions", async (Microsoft.AspNetCore.Http.HttpContext http) =>
        {
            Interlocked.Increment(ref dyingRequests);
            http.Response.ContentType = "text/event-stream";
            await http.Response.StartAsync();
            await http.Response.Body.FlushAsync();
            await Task.Delay(100);
            http.Abort();
        });
        await dying.StartAsync();
        var (replica, address) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(ServerFixture.Model, sequences: 4));
        try
        {
            using (var http = new HttpClient { BaseAddress = address }) await ErrorTests.WaitReady(http);
            var (app, client) = await StartRouter([new Uri(dying.Urls.Single()), address], Affinity.None);
            await using (app)
            using (client)
            {
                var results = new List<TurnResult>();
                for (int i = 0; i < 4; i++) results.Add(await Turn(client, i, 0, [new { role = "user", content = $"Hi {i}" }], () => false));
                Assert.That(dyingRequests, Is.GreaterThan(0), "round-robin sent the dying replica requests");
                Assert.That(results.Select(r => (r.Status, r.Completed)), Has.All.EqualTo((HttpStatusCode.OK, true)),
                    "each is retried on the live replica (YARP alone answers 502 Bad Gateway)");
            }
        }
        finally
        {
            await replica.StopAsync();
            replica.Dispose();
        }
    }

    [Test]
    public void Backends_and_affinity_are_checked_with_errors_that_say_what_to_give()
    {
        Assert.That(() => RouterOptions.ParseBackends("http://127.0.0.1:1,ftp://x"), Throws.ArgumentException.With.Message.Contains("'ftp://x' is not an http(s) URL"));
        Assert.That(() => RouterOptions.ParseBackends(" , "), Throws.ArgumentException.With.Message.Contains("at least one replica"));
        Assert.That(() => RouterOptions.ParseBackends("http://a:1,http://a:1"), Throws.ArgumentException.With.Message.Contains("listed twice"));
        Assert.That(() => RouterOptions.ParseAffinity("sticky"), Throws.ArgumentException.With.Message.Contains("use conversation or none"));
        Assert.That(RouterOptions.ParseBackends("http://127.0.0.1:1, http://127.0.0.1:2"), Has.Count.EqualTo(2));
    }

    [Test]
    public void The_conversation_key_depends_on_the_first_messages_only()
    {
        ulong? Key(string json) => ConversationKey.FromBody(JsonDocument.Parse(json).RootElement);
        var turn1 = Key("""{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}""");
        var turn2 = Key("""{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":"More"}]}""");
        var other = Key("""{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Bye"}]}""");
        Assert.That(turn1, Is.Not.Null);
        Assert.That(turn2, Is.EqualTo(turn1));
        Assert.That(other, Is.Not.EqualTo(turn1));
        Assert.That(Key("""{"prompt":"Once upon a time"}"""), Is.EqualTo(Key("""{"prompt":"Once upon a time"}""")));
        Assert.That(Key("""{"model":"x"}"""), Is.Null);
    }
}
