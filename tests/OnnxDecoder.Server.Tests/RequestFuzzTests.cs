using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Reliability.Tests;

namespace OnnxDecoder.Server.Tests;

/// <summary>Request bodies are hostile input: seeded mutations of valid requests must parse or be
/// refused with an OpenAI error, never anything else, and through the server never a 500.</summary>
public class RequestFuzzTests
{
    private static readonly byte[] ChatSeed = Encoding.UTF8.GetBytes("""
        {"model": "stories260k", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Once upon a time"}]}],
         "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "seed": 42, "stop": ["\n", "The end"],
         "stream": false, "stream_options": {"include_usage": true}, "n": 1, "presence_penalty": 0, "frequency_penalty": 0}
        """);
    private static readonly byte[] CompletionSeed = Encoding.UTF8.GetBytes("""{"model": "stories260k", "prompt": ["Once upon a time"], "max_tokens": 6, "stop": "Lily", "seed": 3, "stream": true}""");

    [TestCase(true)]
    [TestCase(false)]
    public void Mutated_request_bodies_parse_or_are_refused_with_an_openai_error(bool chat)
    {
        var seed = chat ? ChatSeed : CompletionSeed;
        int cases = FuzzCases, accepted = 0, refused = 0;
        var failures = new List<string>();
        for (int n = 0; n < cases; n++)
        {
            var (bytes, how) = Mutator.Text(seed, n);
            try
            {
                using var document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 32 });
                var request = OpenAIRequest.Parse(document, chat);
                request.ToGeneration(16, new Runtime.Sampling.SamplingOptions());
                accepted++;
            }
            catch (Exception e) when (e is JsonException or OpenAIError)
            {
                refused++;
            }
            catch (Exception e)
            {
                failures.Add($"case {n} ({how}): {e.GetType().Name}: {e.Message}");
            }
        }
        TestContext.Out.WriteLine($"{cases} cases: {accepted} accepted, {refused} refused");
        Assert.That(failures, Is.Empty, $"{failures.Count} cases escaped; first: {string.Join(" | ", failures.Take(5))}");
        Assert.That(refused, Is.GreaterThan(cases / 10), "the mutations reach the checks");
        Assert.That(accepted, Is.GreaterThan(cases / 20), "some mutations stay valid requests");
    }

    [Test]
    public async Task Mutated_requests_through_the_server_never_get_a_500()
    {
        using var factory = new ServerFactory(ServerFixture.Settings(ServerFixture.Model, sequences: 4));
        using var client = factory.CreateClient();
        await ErrorTests.WaitReady(client);
        var statuses = new Dictionary<HttpStatusCode, int>();
        for (int n = 0; n < 400; n++)
        {
            bool chat = n % 2 == 0;
            var (bytes, how) = Mutator.Text(chat ? ChatSeed : CompletionSeed, n);
            var content = new ByteArrayContent(bytes);
            content.Headers.ContentType = new("application/json");
            var response = await client.PostAsync(chat ? "/v1/chat/completions" : "/v1/completions", content);
            string body = await response.Content.ReadAsStringAsync();
            statuses[response.StatusCode] = statuses.GetValueOrDefault(response.StatusCode) + 1;
            Assert.That((int)response.StatusCode, Is.EqualTo(200).Or.EqualTo(400), $"case {n} ({how}): {body}");
            if (response.StatusCode == HttpStatusCode.BadRequest)
                Assert.That((string?)JsonNode.Parse(body)!["error"]!["message"], Is.Not.Empty, $"case {n}");
        }
        TestContext.Out.WriteLine(string.Join(", ", statuses.Select(s => $"{(int)s.Key}: {s.Value}")));
        Assert.That(statuses.Keys, Is.EquivalentTo(new[] { HttpStatusCode.OK, HttpStatusCode.BadRequest }));
    }

    private static int FuzzCases => int.TryParse(Environment.GetEnvironmentVariable("ONNXDECODER_FUZZ_CASES"), out int n) ? n : 10_000;
}
