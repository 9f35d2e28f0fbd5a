using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OnnxDecoder.Hosting;
using OnnxDecoder.Router;

namespace OnnxDecoder.Server.Tests;

/// <summary>
/// GET /health/ready (readiness) against GET /health (liveness): 503 saying why until the model is loaded and its
/// batcher runs, 200 after; the router probes readiness, so a loading replica gets no requests.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class ReadinessTests
{
    /// <summary>
    /// A copy of the stories260K folder whose genai_config.json is a named pipe: the loader blocks reading it until
    /// <see cref="Release"/> writes the real file into the pipe, so the model stays "loading" as long as the test wants.
    /// </summary>
    private sealed class SlowModel : IDisposable
    {
        private readonly string _config;
        private readonly byte[] _configBytes;
        private Task? _released;
        public string Folder { get; }

        public SlowModel(string name)
        {
            Folder = Path.Combine(Path.GetDirectoryName(ServerFixture.Model)!, name);
            Directory.CreateDirectory(Folder);
            foreach (var file in Directory.GetFiles(ServerFixture.Model))
                if (Path.GetFileName(file) != "genai_config.json") File.Copy(file, Path.Combine(Folder, Path.GetFileName(file)), overwrite: true);
            _config = Path.Combine(Folder, "genai_config.json");
            _configBytes = File.ReadAllBytes(Path.Combine(ServerFixture.Model, "genai_config.json"));
            File.Delete(_config);
            using var mkfifo = Process.Start(new ProcessStartInfo("mkfifo", [_config]))!;
            mkfifo.WaitForExit();
            Assert.That(mkfifo.ExitCode, Is.EqualTo(0), "mkfifo (coreutils) makes the pipe");
        }

        /// <summary>Lets the load go on (opening the pipe for writing waits for the loader to open it for reading).</summary>
        public Task Release() => _released ??= Task.Run(() => File.WriteAllBytes(_config, _configBytes)).WaitAsync(TimeSpan.FromSeconds(20));

        public void Dispose()
        {
            // A loader still waiting on the pipe would hold the host's shutdown: let it read the file.
            try { Release().Wait(); } catch (Exception e) when (e is AggregateException or TimeoutException) { }
            Directory.Delete(Folder, recursive: true);
        }
    }

    private static string? Description(JsonNode body) => (string?)body["checks"]![OnnxDecoderHealthCheck.Name]!["description"];

    [Test]
    public async Task Ready_is_503_while_a_slow_load_is_in_progress_and_200_once_the_model_serves_while_health_stays_200()
    {
        using var slow = new SlowModel("slow-ready");
        using var factory = new ServerFactory(ServerFixture.Settings(slow.Folder, sequences: 2, maxLength: 64));
        using var client = factory.CreateClient();

        var (readyStatus, ready) = await ServerFixture.GetJson(client, OpenAIEndpoints.ReadyPath);
        Assert.That(readyStatus, Is.EqualTo(HttpStatusCode.ServiceUnavailable), ready.ToJsonString());
        Assert.That((string?)ready["status"], Is.EqualTo("Degraded"));
        Assert.That(Description(ready), Is.EqualTo($"loading {slow.Folder}"));
        var (liveStatus, live) = await ServerFixture.GetJson(client, OpenAIEndpoints.HealthPath);
        Assert.That(liveStatus, Is.EqualTo(HttpStatusCode.OK), "liveness: the process answers while the model loads");
        Assert.That((string?)live["status"], Is.EqualTo("Degraded"));
        await Task.Delay(300);
        Assert.That((await ServerFixture.GetJson(client, OpenAIEndpoints.ReadyPath)).Status, Is.EqualTo(HttpStatusCode.ServiceUnavailable), "still loading: still not ready");

        await slow.Release();
        (readyStatus, ready) = await ServerFixture.PollJson(client, OpenAIEndpoints.ReadyPath, (status, _) => status == HttpStatusCode.OK);
        Assert.That(readyStatus, Is.EqualTo(HttpStatusCode.OK), ready.ToJsonString());
        Assert.That((string?)ready["status"], Is.EqualTo("Healthy"));
        Assert.That(Description(ready), Is.EqualTo("slow-ready ready"));
        var completion = await client.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Once upon a time\", \"max_tokens\": 3}", Encoding.UTF8, "application/json"));
        Assert.That(completion.StatusCode, Is.EqualTo(HttpStatusCode.OK), "ready means a request is served");
    }

    [Test]
    public async Task A_failed_load_keeps_ready_at_503_and_names_the_load_error()
    {
        string broken = ServerFixture.UnloadableModel("broken-ready");
        using var factory = new ServerFactory(ServerFixture.Settings(broken));
        using var client = factory.CreateClient();

        var (status, body) = await ServerFixture.PollJson(client, OpenAIEndpoints.ReadyPath, (_, b) => (string?)b["status"] == "Unhealthy");
        var error = factory.Services.GetRequiredService<OnnxDecoderModel>().LoadError;
        Assert.That(error, Is.Not.Null, "the load failed");
        Assert.That(status, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        Assert.That(Description(body), Is.EqualTo($"loading {broken} failed: {error!.Message}"));
        Assert.That(error.Message, Does.Contain("could not load the model"));
        await Task.Delay(300);
        Assert.That((await ServerFixture.GetJson(client, OpenAIEndpoints.ReadyPath)).Status, Is.EqualTo(HttpStatusCode.ServiceUnavailable), "a failed load stays not ready");
    }

    [Test]
    public async Task Ready_turns_503_once_the_batcher_stops()
    {
        using var factory = new ServerFactory(ServerFixture.Settings(ServerFixture.Model, sequences: 2, maxLength: 64));
        using var client = factory.CreateClient();
        Assert.That((await ServerFixture.PollJson(client, OpenAIEndpoints.ReadyPath, (s, _) => s == HttpStatusCode.OK)).Status, Is.EqualTo(HttpStatusCode.OK));
        // The batcher stopped (as when the host disposes the model): not ready, though the process still answers.
        factory.Services.GetRequiredService<OnnxDecoderModel>().Batcher!.Dispose();
        var (status, body) = await ServerFixture.GetJson(client, OpenAIEndpoints.ReadyPath);
        Assert.That(status, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        Assert.That(Description(body), Is.EqualTo("stories260k: the batcher has stopped (the server is shutting down)"));
    }

    [Test]
    public async Task With_an_api_key_ready_is_reachable_without_the_key()
    {
        var settings = ServerFixture.Settings(ServerFixture.Model);
        settings[OnnxDecoderServer.ApiKeySetting] = "s3cret";
        using var factory = new ServerFactory(settings);
        using var client = factory.CreateClient();
        var (status, body) = await ServerFixture.PollJson(client, OpenAIEndpoints.ReadyPath, (s, _) => s != HttpStatusCode.ServiceUnavailable);
        Assert.That(status, Is.EqualTo(HttpStatusCode.OK), body.ToJsonString());
        Assert.That((await client.GetAsync("/v1/models")).StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized), "the key is in force for /v1");
    }

    [Test]
    public async Task The_router_sends_nothing_to_a_replica_that_still_loads_and_answers_no_replica_when_none_is_ready()
    {
        using var slow = new SlowModel("slow-replica");
        var (readyHost, readyAddress) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(ServerFixture.Model, sequences: 2, maxLength: 64));
        var (slowHost, slowAddress) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(slow.Folder, sequences: 2, maxLength: 64));
        var routers = new List<WebApplication>();
        try
        {
            using (var http = new HttpClient { BaseAddress = readyAddress }) await ErrorTests.WaitReady(http);
            async Task<HttpClient> Router(params Uri[] backends)
            {
                var options = new RouterOptions { Backends = backends, HealthInterval = TimeSpan.FromMilliseconds(200), ReactivationPeriod = TimeSpan.FromMinutes(5) };
                var app = OnnxDecoderRouter.Build(options, "http://127.0.0.1:0", logging => logging.SetMinimumLevel(LogLevel.Critical));
                await app.StartAsync();
                routers.Add(app);
                return new HttpClient { BaseAddress = new Uri(app.Urls.Single()), Timeout = TimeSpan.FromSeconds(30) };
            }
            using var both = await Router(readyAddress, slowAddress);
            using var slowOnly = await Router(slowAddress);
            string? Active(JsonNode health, Uri replica) => (string?)health["replicas"]![replica.ToString()]!["active"];

            // The loading replica answers /health with 200 (Degraded) but /health/ready with 503: the probes take it out.
            var (_, state) = await ServerFixture.PollJson(both, OnnxDecoderRouter.HealthPath, (_, h) => Active(h, slowAddress) == "Unhealthy" && Active(h, readyAddress) == "Healthy");
            Assert.That(Active(state, slowAddress), Is.EqualTo("Unhealthy"), $"the loading replica is out: {state.ToJsonString()}");
            Assert.That(Active(state, readyAddress), Is.EqualTo("Healthy"));
            for (int i = 0; i < 8; i++)
            {
                // Different prompts, different conversation keys: with both replicas in, about half would pick the loading one.
                var body = $"{{\"prompt\": \"Story {i}: once upon a time\", \"max_tokens\": 2}}";
                var response = await both.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
                Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), $"request {i}: {await response.Content.ReadAsStringAsync()}");
            }

            await ServerFixture.PollJson(slowOnly, OnnxDecoderRouter.HealthPath, (_, h) => Active(h, slowAddress) == "Unhealthy");
            var refused = await slowOnly.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Hi\", \"max_tokens\": 2}", Encoding.UTF8, "application/json"));
            Assert.That(refused.StatusCode, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
            Assert.That(refused.Headers.RetryAfter?.Delta, Is.EqualTo(TimeSpan.FromSeconds(1)));
            Assert.That((string?)JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["code"], Is.EqualTo("no_replica"));

            // Loaded, the replica comes back.
            await slow.Release();
            (_, state) = await ServerFixture.PollJson(both, OnnxDecoderRouter.HealthPath, (_, h) => Active(h, slowAddress) == "Healthy");
            Assert.That(Active(state, slowAddress), Is.EqualTo("Healthy"), $"the loaded replica is back: {state.ToJsonString()}");
            await ServerFixture.PollJson(slowOnly, OnnxDecoderRouter.HealthPath, (_, h) => Active(h, slowAddress) == "Healthy");
            var served = await slowOnly.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Hi\", \"max_tokens\": 2}", Encoding.UTF8, "application/json"));
            Assert.That(served.StatusCode, Is.EqualTo(HttpStatusCode.OK), await served.Content.ReadAsStringAsync());
        }
        finally
        {
            foreach (var app in routers) await app.DisposeAsync();
            await slow.Release().ContinueWith(_ => { });
            foreach (var host in new[] { readyHost, slowHost })
            {
                await host.StopAsync();
                host.Dispose();
            }
        }
    }
}
