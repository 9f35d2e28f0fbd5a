using System.ClientModel;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;
using OpenAI;

namespace OnnxDecoder.Server.Tests;

/// <summary>
/// POST /v1/embeddings on loopback, through the official OpenAI .NET client (base64 encoding, its default) and
/// raw HTTP (float encoding, token ids, errors): each embedding equals the runtime's EmbeddingRunner on the ids of
/// Hugging Face's tokenizer(text) (the runtime tests check the runner against the reference forward pass), and
/// 16 inputs in one request equal each input in a request of its own.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class EmbeddingsEndpointTests
{
    private string _root = "", _model = "";
    private IHost _host = null!;
    private Uri _address = null!;
    private HttpClient _http = null!;

    [OneTimeSetUp]
    public async Task Start()
    {
        _root = TestPaths.NewTempFolder("server-embeddings");
        string checkpoint = Path.Combine(_root, "qwen3-tiny");
        SynthPresets.Write("qwen3-tiny", seed: 8, checkpoint);
        _model = Path.Combine(_root, "qwen3-embedding");
        ModelFolderWriter.Export(checkpoint, null, _model, new ExportOptions { Lowering = Lowering.Ort, HiddenStatesOutput = true });
        (_host, _address) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(_model, sequences: 1));
        _http = new HttpClient { BaseAddress = _address };
        await ErrorTests.WaitReady(_http);
    }

    [OneTimeTearDown]
    public async Task Stop()
    {
        _http.Dispose();
        await _host.StopAsync();
        _host.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private OpenAI.Embeddings.EmbeddingClient Client() =>
        new("qwen3-embedding", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(_address, "/v1"), NetworkTimeout = TimeSpan.FromMinutes(2) });

    /// <summary>16 texts of different lengths.</summary>
    private static string[] Texts() =>
        Enumerable.Range(0, 16).Select(i => string.Join(' ', Enumerable.Range(0, 1 + i * 3).Select(w => $"word{(w * 7 + i) % 23}"))).ToArray();

    private float[][] Expected(IEnumerable<string> texts)
    {
        using var model = new DecoderModel(_model);
        var tokenizer = TextTokenizer.Load(_model, model.Folder.BosTokenId);
        return new EmbeddingRunner(model).Embed(texts.Select(t => (IReadOnlyList<int>)tokenizer.EncodeText(t, addSpecialTokens: true)).ToList());
    }

    private static float MaxDifference(ReadOnlySpan<float> a, float[] b)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length));
        float max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    [Test]
    public async Task Sixteen_texts_through_the_openai_client_equal_the_runner_and_one_request_each()
    {
        var texts = Texts();
        var expected = Expected(texts);
        var client = Client();
        var collection = (await client.GenerateEmbeddingsAsync(texts)).Value;
        Assert.That(collection, Has.Count.EqualTo(16));
        Assert.That(collection.Model, Is.EqualTo("qwen3-embedding"));
        for (int i = 0; i < texts.Length; i++)
        {
            Assert.That(collection[i].Index, Is.EqualTo(i));
            Assert.That(MaxDifference(collection[i].ToFloats().Span, expected[i]), Is.LessThan(1e-5f), $"batched input {i}");
            var alone = (await client.GenerateEmbeddingAsync(texts[i])).Value;
            Assert.That(MaxDifference(alone.ToFloats().Span, collection[i].ToFloats().ToArray()), Is.LessThan(1e-4f), $"input {i} alone vs batched");
        }
        var tokenizer = TextTokenizer.Load(_model, null);
        Assert.That(collection.Usage.InputTokenCount, Is.EqualTo(texts.Sum(t => tokenizer.EncodeText(t, addSpecialTokens: true).Length)));

        // Microsoft.Extensions.AI's IEmbeddingGenerator over the same client.
        var generator = client.AsIEmbeddingGenerator();
        var generated = await generator.GenerateAsync(texts.Take(3));
        for (int i = 0; i < 3; i++) Assert.That(MaxDifference(generated[i].Vector.Span, expected[i]), Is.LessThan(1e-5f), $"IEmbeddingGenerator input {i}");
    }

    [Test]
    public async Task Token_ids_and_float_encoding_over_raw_http()
    {
        using var model = new DecoderModel(_model);
        var tokenizer = TextTokenizer.Load(_model, model.Folder.BosTokenId);
        int[][] ids = [tokenizer.EncodeText("Once upon a time", true), [5, 6, 7, 8, 9, 10, 11]];
        var expected = new EmbeddingRunner(model).Embed(ids.Select(i => (IReadOnlyList<int>)i).ToList());

        var response = await _http.PostAsJsonAsync("/v1/embeddings", new { input = ids, encoding_format = "float", model = "qwen3-embedding" });
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK));
        var body = (await response.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.That((string?)body["object"], Is.EqualTo("list"));
        Assert.That((int)body["usage"]!["prompt_tokens"]!, Is.EqualTo(ids.Sum(i => i.Length)));
        Assert.That((int)body["usage"]!["total_tokens"]!, Is.EqualTo(ids.Sum(i => i.Length)));
        var data = body["data"]!.AsArray();
        Assert.That(data, Has.Count.EqualTo(2));
        for (int i = 0; i < 2; i++)
        {
            Assert.That((string?)data[i]!["object"], Is.EqualTo("embedding"));
            var vector = data[i]!["embedding"]!.AsArray().Select(v => (float)v!).ToArray();
            Assert.That(MaxDifference(vector, expected[i]), Is.LessThan(1e-6f), $"token-id input {i}");
        }

        // One flat array of ids is one input.
        var single = await _http.PostAsJsonAsync("/v1/embeddings", new { input = ids[1] });
        var singleData = (await single.Content.ReadFromJsonAsync<JsonObject>())!["data"]!.AsArray();
        Assert.That(singleData, Has.Count.EqualTo(1));
    }

    [TestCase("""{"input": ""}""", "input")]
    [TestCase("""{"input": []}""", "input")]
    [TestCase("""{"input": ["a", 1]}""", "input")]
    [TestCase("""{"input": [[1, -2]]}""", "input")]
    [TestCase("""{"input": [[1, 512]]}""", "input")]
    [TestCase("""{"input": "a", "encoding_format": "hex"}""", "encoding_format")]
    [TestCase("""{"input": "a", "dimensions": 8}""", "dimensions")]
    [TestCase("""{"input": "a", "model": "gpt-4"}""", "model")]
    [TestCase("""{"model": "qwen3-embedding"}""", "input")]
    public async Task Bad_requests_get_an_openai_error_naming_the_field(string json, string param)
    {
        var response = await _http.PostAsync("/v1/embeddings", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        var error = (await response.Content.ReadFromJsonAsync<JsonObject>())!["error"]!;
        Assert.That((string?)error["param"], Is.EqualTo(param));
        Assert.That((string?)error["message"], Is.Not.Empty);
    }

    [Test]
    public async Task A_model_without_hidden_states_answers_with_the_export_fix()
    {
        var (host, address) = await ServerFixture.StartOnLoopback(ServerFixture.Settings(ServerFixture.Model, sequences: 1));
        using var _ = host;
        using var http = new HttpClient { BaseAddress = address };
        await ErrorTests.WaitReady(http);
        var response = await http.PostAsJsonAsync("/v1/embeddings", new { input = "Once upon a time" });
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        var error = (await response.Content.ReadFromJsonAsync<JsonObject>())!["error"]!;
        Assert.That((string?)error["code"], Is.EqualTo("model_not_supported"));
        Assert.That((string?)error["message"], Does.Contain("--hidden-states"));
        await host.StopAsync();
    }
}
