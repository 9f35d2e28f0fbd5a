using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace OnnxDecoder.Server.Tests;

/// <summary>`serve --metrics`: /metrics scraped and parsed as Prometheus text before, during and after a
/// bounded load; `--otlp`: traces and metrics arrive at a collector stand-in on loopback.</summary>
[Parallelizable(ParallelScope.None)]
public class MetricsTests
{
    /// <summary>A Prometheus text exposition: each metric family's type, and every sample's value by
    /// its full name with labels.</summary>
    private sealed record Scrape(Dictionary<string, string> Types, List<(string Name, string Labels, double Value)> Samples)
    {
        public static Scrape Parse(string text)
        {
            var types = new Dictionary<string, string>();
            var samples = new List<(string, string, double)>();
            foreach (var raw in text.Split('\n'))
            {
                string line = raw.Trim();
                if (line.Length == 0) continue;
                if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
                {
                    var parts = line.Split(' ');
                    types[parts[2]] = parts[3];
                    continue;
                }
                if (line[0] == '#') continue;
                int brace = line.IndexOf('{'), space = line.LastIndexOf(' ');
                string name = brace >= 0 && brace < space ? line[..brace] : line[..line.IndexOf(' ')];
                string labels = brace >= 0 && brace < space ? line[(brace + 1)..line.LastIndexOf('}')] : "";
                // A sample may carry a timestamp after its value.
                var fields = line[(brace >= 0 && brace < space ? line.LastIndexOf('}') + 1 : name.Length)..].Trim().Split(' ');
                samples.Add((name, labels, double.Parse(fields[0], CultureInfo.InvariantCulture)));
            }
            return new Scrape(types, samples);
        }

        public double Sum(string name, string? labelContains = null) =>
            Samples.Where(s => s.Name == name && (labelContains is null || s.Labels.Contains(labelContains))).Sum(s => s.Value);

        public bool Has(string name) => Samples.Any(s => s.Name == name);
    }

    private static async Task<Scrape> Get(HttpClient http)
    {
        var response = await http.GetAsync("/metrics");
        Assert.That(response.IsSuccessStatusCode, Is.True, $"/metrics answered {(int)response.StatusCode}");
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("text/plain").Or.EqualTo("application/openmetrics-text"));
        return Scrape.Parse(await response.Content.ReadAsStringAsync());
    }

    [Test]
    public async Task Metrics_name_the_batcher_state_and_move_under_load_and_otlp_reaches_a_collector()
    {
        // A stand-in OTLP/HTTP collector: it records what was posted where.
        var posts = new ConcurrentQueue<(string Path, string? ContentType, long Bytes)>();
        var collectorBuilder = WebApplication.CreateSlimBuilder();
        collectorBuilder.WebHost.UseUrls("http://127.0.0.1:0");
        collectorBuilder.Logging.SetMinimumLevel(LogLevel.Warning);
        var collector = collectorBuilder.Build();
        collector.MapPost("/{**path}", async (HttpContext http) =>
        {
            using var body = new MemoryStream();
            await http.Request.Body.CopyToAsync(body);
            posts.Enqueue((http.Request.Path, http.Request.ContentType, body.Length));
            return Results.Ok();
        });
        await collector.StartAsync();
        await using var _collector = collector;

        var settings = ServerFixture.Settings(ServerFixture.Model, sequences: 2);
        settings[OnnxDecoderServer.MetricsSetting] = "true";
        settings[OnnxDecoderServer.OtlpSetting] = collector.Urls.Single();
        var (host, address) = await ServerFixture.StartOnLoopback(settings);
        using var http = new HttpClient { BaseAddress = address };
        await ErrorTests.WaitReady(http);

        var before = await Get(http);
        var expectedTypes = new Dictionary<string, string>
        {
            ["onnxdecoder_queue_length"] = "gauge", ["onnxdecoder_sequences_active"] = "gauge",
            ["onnxdecoder_kv_cache_rows_used"] = "gauge", ["onnxdecoder_kv_cache_rows_limit"] = "gauge",
            ["onnxdecoder_tokens_per_second"] = "gauge",
            ["onnxdecoder_prefix_reused_tokens_total"] = "counter", ["onnxdecoder_tokens_decoded_total"] = "counter",
        };
        foreach (var (name, type) in expectedTypes)
        {
            string family = type == "counter" ? name[..^"_total".Length] : name;
            Assert.That(before.Types.GetValueOrDefault(name) ?? before.Types.GetValueOrDefault(family), Is.EqualTo(type), $"{name}: TYPE");
            Assert.That(before.Has(name), Is.True, $"{name}: a sample");
        }
        Assert.That(before.Sum("onnxdecoder_kv_cache_rows_limit"), Is.EqualTo(2));
        Assert.That(before.Sum("onnxdecoder_sequences_active"), Is.EqualTo(0));

        // Load: 12 completions of one shared prompt on 2 rows (so some wait), scraped all the while.
        const int requests = 12, maxTokens = 48;
        var load = Task.WhenAll(Enumerable.Range(0, requests).Select(async i =>
        {
            var body = JsonSerializer.Serialize(new { prompt = $"Once upon a time, there was a little girl named Lily. {i}", max_tokens = maxTokens, temperature = 0 });
            var response = await http.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            Assert.That(response.IsSuccessStatusCode, Is.True, json.ToJsonString());
            return (int)json["usage"]!["completion_tokens"]!;
        }));
        double maxActive = 0, maxQueue = 0, maxRows = 0, maxRate = 0;
        while (!load.IsCompleted)
        {
            var during = await Get(http);
            maxActive = Math.Max(maxActive, during.Sum("onnxdecoder_sequences_active"));
            maxQueue = Math.Max(maxQueue, during.Sum("onnxdecoder_queue_length"));
            maxRows = Math.Max(maxRows, during.Sum("onnxdecoder_kv_cache_rows_used"));
            maxRate = Math.Max(maxRate, during.Sum("onnxdecoder_tokens_per_second"));
            await Task.Delay(10);
        }
        int generated = (await load).Sum();
        var after = await Get(http);
        TestContext.Progress.WriteLine($"metrics: under load at most {maxActive} active, {maxQueue} queued, {maxRows} KV rows, {maxRate:F0} tokens/s");

        Assert.That(maxActive, Is.InRange(1, 3), "two rows decoding plus one prefilling at most");
        Assert.That(maxRows, Is.InRange(1, 2));
        Assert.That(maxQueue, Is.GreaterThan(0), "12 requests on 2 rows must wait");
        Assert.That(maxRate, Is.GreaterThan(0));
        Assert.That(after.Sum("onnxdecoder_sequences_active"), Is.EqualTo(0));
        Assert.That(after.Sum("onnxdecoder_queue_length"), Is.EqualTo(0));
        Assert.That(after.Sum("onnxdecoder_prefix_reused_tokens_total"), Is.GreaterThan(before.Sum("onnxdecoder_prefix_reused_tokens_total")),
            "the prompts share their first tokens");
        double decoded = after.Sum("onnxdecoder_tokens_decoded_total") - before.Sum("onnxdecoder_tokens_decoded_total");
        Assert.That(decoded, Is.InRange(generated - requests, generated), "every output token but each request's first comes from a decode step");

        // gen_ai histograms: one output observation per request, summing to the tokens the responses report.
        Assert.That(after.Types.GetValueOrDefault("gen_ai_client_token_usage"), Is.EqualTo("histogram"));
        Assert.That(after.Sum("gen_ai_client_token_usage_count", "gen_ai_token_type=\"output\""), Is.EqualTo(requests));
        Assert.That(after.Sum("gen_ai_client_token_usage_sum", "gen_ai_token_type=\"output\""), Is.EqualTo(generated));
        Assert.That(after.Has("gen_ai_client_operation_duration_seconds_bucket"), Is.True);

        // OTLP: traces are batched within seconds; metrics are pushed at the latest when the host stops.
        var deadline = DateTime.UtcNow.AddSeconds(8);
        while (!posts.Any(p => p.Path == "/v1/traces") && DateTime.UtcNow < deadline) await Task.Delay(100);
        await host.StopAsync();
        host.Dispose();
        TestContext.Progress.WriteLine("otlp: " + string.Join("; ", posts.Select(p => $"{p.Path} {p.ContentType} {p.Bytes} B")));
        Assert.That(posts.Where(p => p.Path == "/v1/traces"), Is.Not.Empty, "spans reach the collector");
        Assert.That(posts.Where(p => p.Path == "/v1/metrics" && p.Bytes > 0), Is.Not.Empty, "metrics reach the collector");
        Assert.That(posts.Select(p => p.ContentType), Has.All.EqualTo("application/x-protobuf"));
    }
}
