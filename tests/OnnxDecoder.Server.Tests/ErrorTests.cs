using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxDecoder.Server.Tests;

/// <summary>Request and response shapes through WebApplicationFactory: every refusal is an
/// OpenAI error object with the right status, naming the offending field.</summary>
[Parallelizable(ParallelScope.None)]
public class ErrorTests
{
    private static ServerFactory _factory = null!;
    private static HttpClient _client = null!;

    [OneTimeSetUp]
    public async Task Start()
    {
        _factory = new ServerFactory(ServerFixture.Settings(ServerFixture.Model, sequences: 2, maxLength: 64));
        _client = _factory.CreateClient();
        await WaitReady(_client);
    }

    [OneTimeTearDown]
    public void Stop()
    {
        _client.Dispose();
        _factory.Dispose();
    }

    public static async Task WaitReady(HttpClient client)
    {
        for (int i = 0; i < 300; i++)
        {
            var health = await client.GetFromJsonAsync<JsonObject>("/health");
            if ((string?)health!["status"] == "Healthy") return;
            await Task.Delay(20);
        }
        Assert.Fail("the model did not load within 6 s");
    }

    private static async Task<(HttpStatusCode Status, JsonNode Body, HttpResponseMessage Response)> Post(string path, string json, string contentType = "application/json")
    {
        var response = await _client.PostAsync(path, new StringContent(json, Encoding.UTF8, contentType));
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        return (response.StatusCode, body, response);
    }

    [TestCase("/v1/chat/completions", "{\"messages\": [", null, "the request body is not valid JSON")]
    [TestCase("/v1/chat/completions", "[1, 2]", null, "the request body must be a JSON object")]
    [TestCase("/v1/chat/completions", "{\"model\": \"gpt-4\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}", "model", "the model 'gpt-4' does not exist; this server serves 'stories260k'")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 0}", "max_tokens", "'max_tokens' is 0; it must be at least 1")]
    [TestCase("/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": -3}", "max_tokens", "'max_tokens' is -3; it must be at least 1")]
    [TestCase("/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 60}", "max_tokens", "this model's maximum context length is 64 tokens; you requested 65 (5 in the prompt, 60 for the output): lower max_tokens to at most 59")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"temperature\": \"hot\"}", "temperature", "'temperature' must be a number")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"temperature\": 3}", "temperature", "'temperature' is 3; it must be between 0 and 2")]
    [TestCase("/v1/chat/completions", "{\"messages\": []}", "messages", "'messages' must not be empty")]
    [TestCase("/v1/chat/completions", "{\"max_tokens\": 5}", "messages", "'messages' is required")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"function\", \"content\": \"x\"}]}", "messages[0].role", "'messages[0].role' is 'function'")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "messages[0].tool_call_id", "'messages[0].tool_call_id' is required")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "messages[0].content", "may only hold text parts")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"n\": 2}", "n", "only n = 1 is supported")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "'stop' has 5 sequences; at most 4 are allowed")]
    [TestCase("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"tools\": [{\"type\": \"function\"}]}", "tools[0].function", "'tools[0].function' is required")]
    [TestCase("/v1/completions", "{\"prompt\": [1, 70000]}", "prompt", "token id 70000 is outside the vocabulary")]
    [TestCase("/v1/completions", "{\"prompt\": 12}", "prompt", "'prompt' must be a string or an array of token ids")]
    [TestCase("/v1/completions", "{\"prompt\": \"Hi\", \"echo\": true}", "echo", "'echo' is not supported")]
    [TestCase("/v1/completions", "{\"prompt\": \"Hi\", \"best_of\": 3}", "best_of", "only best_of = 1 is supported")]
    [TestCase("/v1/completions", "{\"prompt\": \"Hi\", \"stream\": \"yes\"}", "stream", "'stream' must be true or false")]
    public async Task Invalid_requests_get_400_with_an_openai_error_naming_the_field(string path, string json, string? param, string message)
    {
        var (status, body, _) = await Post(path, json);
        Assert.That(status, Is.EqualTo(HttpStatusCode.BadRequest), body.ToJsonString());
        Assert.That((string?)body["error"]!["type"], Is.EqualTo("invalid_request_error"));
        Assert.That((string?)body["error"]!["message"], Does.Contain(message));
        Assert.That((string?)body["error"]!["param"], Is.EqualTo(param));
    }

    [Test]
    public async Task A_prompt_longer_than_the_context_is_refused_as_context_length_exceeded()
    {
        string longPrompt = string.Join(" ", Enumerable.Repeat("the cat sat", 40));
        var (status, body, _) = await Post("/v1/chat/completions", JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = longPrompt } } }));
        Assert.That(status, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That((string?)body["error"]!["code"], Is.EqualTo("context_length_exceeded"));
        Assert.That((string?)body["error"]!["message"], Does.StartWith("this model's maximum context length is 64 tokens, but the prompt has "));
        Assert.That((string?)body["error"]!["param"], Is.EqualTo("messages"));
    }

    [Test]
    public async Task A_body_that_is_not_json_is_refused_by_content_type()
    {
        var (status, body, _) = await Post("/v1/completions", "prompt=Hi", "application/x-www-form-urlencoded");
        Assert.That(status, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That((string?)body["error"]!["message"], Does.Contain("must be JSON (Content-Type: application/json)"));
    }

    [Test]
    public async Task Completions_answer_with_text_usage_and_finish_reason_and_token_id_prompts_work()
    {
        var expected = ServerFixture.Greedy("Once upon a time", 20);
        var (status, body, _) = await Post("/v1/completions", "{\"model\": \"stories260k\", \"prompt\": \"Once upon a time\", \"max_tokens\": 20, \"temperature\": 0}");
        Assert.That(status, Is.EqualTo(HttpStatusCode.OK), body.ToJsonString());
        Assert.That((string?)body["object"], Is.EqualTo("text_completion"));
        Assert.That((string?)body["choices"]![0]!["text"], Is.EqualTo(expected.Text));
        Assert.That((string?)body["choices"]![0]!["finish_reason"], Is.EqualTo("length"));
        Assert.That((int)body["usage"]!["prompt_tokens"]!, Is.EqualTo(5));
        Assert.That((int)body["usage"]!["completion_tokens"]!, Is.EqualTo(20));
        Assert.That((int)body["usage"]!["total_tokens"]!, Is.EqualTo(25));

        var ids = JsonSerializer.Serialize(new { prompt = expected.PromptTokenIds, max_tokens = 20 });
        var (_, byIds, _) = await Post("/v1/completions", ids);
        Assert.That((string?)byIds["choices"]![0]!["text"], Is.EqualTo(expected.Text));
    }

    [Test]
    public async Task Streaming_completions_are_server_sent_events_ending_in_done()
    {
        var expected = ServerFixture.Greedy("Once upon a time", 12);
        var response = await _client.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Once upon a time\", \"max_tokens\": 12, \"stream\": true, \"stream_options\": {\"include_usage\": true}}", Encoding.UTF8, "application/json"));
        Assert.That(response.Content.Headers.ContentType!.MediaType, Is.EqualTo("text/event-stream"));
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.That(events, Has.All.StartWith("data: "));
        Assert.That(events[^1], Is.EqualTo("data: [DONE]"));
        var chunks = events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!).ToList();
        var text = string.Concat(chunks.SelectMany(c => c["choices"]!.AsArray()).Select(c => (string?)c!["text"]));
        Assert.That(text, Is.EqualTo(expected.Text));
        Assert.That(chunks.SelectMany(c => c["choices"]!.AsArray()).Select(c => (string?)c!["finish_reason"]).Where(f => f is not null), Is.EqualTo(new[] { "length" }));
        Assert.That((int)chunks[^1]["usage"]!["completion_tokens"]!, Is.EqualTo(12));
    }

    [Test]
    public async Task Models_and_health_describe_the_loaded_model()
    {
        var models = await _client.GetFromJsonAsync<JsonObject>("/v1/models");
        Assert.That((string?)models!["object"], Is.EqualTo("list"));
        Assert.That((string?)models["data"]![0]!["id"], Is.EqualTo("stories260k"));
        Assert.That((string?)models["data"]![0]!["object"], Is.EqualTo("model"));
        var health = await _client.GetAsync("/health");
        Assert.That(health.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(await health.Content.ReadAsStringAsync(), Does.Contain("\"status\":\"Healthy\""));
    }

    [Test]
    public async Task A_full_queue_answers_429_with_retry_after_and_a_disconnected_stream_frees_its_sequence()
    {
        using var factory = new ServerFactory(ServerFixture.Settings(ServerFixture.Model, sequences: 1, queue: 0));
        using var client = factory.CreateClient();
        await WaitReady(client);
        var holdingRequest = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("{\"prompt\": \"Once upon a time\", \"max_tokens\": 250, \"stream\": true}", Encoding.UTF8, "application/json"),
        };
        using var cancelHolding = new CancellationTokenSource();
        var holding = await client.SendAsync(holdingRequest, HttpCompletionOption.ResponseHeadersRead, cancelHolding.Token);
        var stream = await holding.Content.ReadAsStreamAsync(cancelHolding.Token);
        await stream.ReadExactlyAsync(new byte[16], cancelHolding.Token); // the first event arrived: the only sequence is taken

        var refused = await client.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Hi\", \"max_tokens\": 3}", Encoding.UTF8, "application/json"));
        Assert.That((int)refused.StatusCode, Is.EqualTo(429));
        Assert.That(refused.Headers.RetryAfter!.Delta, Is.EqualTo(TimeSpan.FromSeconds(1)));
        var error = JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!;
        Assert.That((string?)error["code"], Is.EqualTo("queue_full"));
        Assert.That((string?)error["message"], Does.StartWith("all 1 sequences are busy"));

        cancelHolding.Cancel(); // the client goes away mid-stream
        holding.Dispose();
        HttpStatusCode status = 0;
        for (int i = 0; i < 250 && status != HttpStatusCode.OK; i++)
        {
            var retry = await client.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Hi\", \"max_tokens\": 3}", Encoding.UTF8, "application/json"));
            status = retry.StatusCode;
            if (status != HttpStatusCode.OK) await Task.Delay(20);
        }
        Assert.That(status, Is.EqualTo(HttpStatusCode.OK), "the sequence came back after the disconnect");
    }

    [Test]
    public async Task With_an_api_key_v1_needs_the_bearer_token_and_health_stays_open()
    {
        var settings = ServerFixture.Settings(ServerFixture.Model);
        settings[OnnxDecoderServer.ApiKeySetting] = "s3cret";
        using var factory = new ServerFactory(settings);
        using var client = factory.CreateClient();
        await WaitReady(client);
        var refused = await client.GetAsync("/v1/models");
        Assert.That(refused.StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
        Assert.That((string?)JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["code"], Is.EqualTo("invalid_api_key"));
        var wrong = new HttpRequestMessage(HttpMethod.Get, "/v1/models") { Headers = { Authorization = new("Bearer", "guess") } };
        Assert.That((await client.SendAsync(wrong)).StatusCode, Is.EqualTo(HttpStatusCode.Unauthorized));
        var right = new HttpRequestMessage(HttpMethod.Get, "/v1/models") { Headers = { Authorization = new("Bearer", "s3cret") } };
        Assert.That((await client.SendAsync(right)).StatusCode, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task A_model_that_fails_to_load_answers_503_and_unhealthy()
    {
        string broken = ServerFixture.UnloadableModel("broken");
        using var factory = new ServerFactory(ServerFixture.Settings(broken));
        using var client = factory.CreateClient();
        var (health, _) = await ServerFixture.PollJson(client, "/health", (status, _) => status == HttpStatusCode.ServiceUnavailable,
            TimeSpan.FromSeconds(4));
        Assert.That(health, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        var response = await client.PostAsync("/v1/completions", new StringContent("{\"prompt\": \"Hi\"}", Encoding.UTF8, "application/json"));
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
        Assert.That((string?)error["code"], Is.EqualTo("model_load_failed"));
        Assert.That((string?)error["message"], Does.StartWith("the model failed to load: "));
    }
}
