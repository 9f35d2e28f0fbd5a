using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Server.Tests;

/// <summary>
/// The server reads the sampling table: each parameter out of range is a 400 naming it, and a
/// request that leaves a parameter out gets the model folder's genai_config.json search value.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class SamplingParameterTests
{
    private static ServerFactory _factory = null!;
    private static HttpClient _client = null!;
    private static string _folder = "";

    [OneTimeSetUp]
    public async Task Start()
    {
        // The fixture's export, with sampling switched on in its search block.
        _folder = ServerFixture.Model + "-sampled";
        Directory.CreateDirectory(_folder);
        foreach (var file in Directory.GetFiles(ServerFixture.Model)) File.Copy(file, Path.Combine(_folder, Path.GetFileName(file)), overwrite: true);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, "genai_config.json")))!.AsObject();
        config["search"]!["do_sample"] = true;
        config["search"]!["temperature"] = 0.8;
        config["search"]!["top_k"] = 20;
        File.WriteAllText(Path.Combine(_folder, "genai_config.json"), config.ToJsonString());
        _factory = new ServerFactory(ServerFixture.Settings(_folder, sequences: 2, maxLength: 128));
        _client = _factory.CreateClient();
        await ErrorTests.WaitReady(_client);
    }

    [OneTimeTearDown]
    public void Stop()
    {
        _client.Dispose();
        _factory.Dispose();
    }

    private static async Task<(HttpStatusCode Status, JsonNode Body)> Complete(object request)
    {
        var response = await _client.PostAsync("/v1/completions", new StringContent(JsonSerializer.Serialize(request), Encoding.UTF8, "application/json"));
        return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!);
    }

    private static IEnumerable<TestCaseData> OutOfRange() =>
        SamplingParameters.All.Where(p => p != SamplingParameters.Seed)
            .SelectMany(p => new[] { p.Min - 1, p.Max + 1 }.Select(v => new TestCaseData(p.Name, v).SetName($"{p.Name} = {v}")));

    [TestCaseSource(nameof(OutOfRange))]
    public async Task A_sampling_value_outside_the_tables_range_is_a_400_naming_the_field(string name, double value)
    {
        var (status, body) = await Complete(new Dictionary<string, object> { ["prompt"] = "Once", ["max_tokens"] = 2, [name] = value });
        Assert.That(status, Is.EqualTo(HttpStatusCode.BadRequest), body.ToJsonString());
        Assert.That((string?)body["error"]!["param"], Is.EqualTo(name));
        Assert.That((string?)body["error"]!["message"], Does.StartWith($"'{name}' is ").And.Contain("it must be"));
    }

    [Test]
    public async Task The_ranges_are_openais_where_openai_has_one()
    {
        var (_, temperature) = await Complete(new { prompt = "Once", temperature = 2.5 });
        Assert.That((string?)temperature["error"]!["message"], Is.EqualTo("'temperature' is 2.5; it must be between 0 and 2"));
        var (_, topP) = await Complete(new { prompt = "Once", top_p = 1.01 });
        Assert.That((string?)topP["error"]!["message"], Is.EqualTo("'top_p' is 1.01; it must be between 0 and 1"));
        var (status, _) = await Complete(new { prompt = "Once", top_p = 0, max_tokens = 2 });
        Assert.That(status, Is.EqualTo(HttpStatusCode.OK), "top_p 0 is allowed (the most likely token)");
    }

    [Test]
    public async Task A_request_without_sampling_values_gets_the_folders_search_defaults_and_its_own_values_override_them()
    {
        int[] prompt = [1, 403, 407, 261, 378];
        async Task<string> Text(Dictionary<string, object> fields)
        {
            fields["prompt"] = prompt;
            fields["max_tokens"] = 40;
            var (status, body) = await Complete(fields);
            Assert.That(status, Is.EqualTo(HttpStatusCode.OK), body.ToJsonString());
            return (string)body["choices"]![0]!["text"]!;
        }
        string defaults = await Text(new() { ["seed"] = 5 });
        string explicitValues = await Text(new() { ["seed"] = 5, ["temperature"] = 0.8, ["top_k"] = 20 });
        string greedy = await Text(new() { ["temperature"] = 0 });
        Assert.That(defaults, Is.EqualTo(explicitValues), "search.temperature 0.8 and top_k 20 apply when the request gives none");
        Assert.That(greedy, Is.EqualTo(ServerFixture.Greedy("Once upon a time", 40).Text), "temperature 0 in the request overrides the folder");
        Assert.That(defaults, Is.Not.EqualTo(greedy), "the folder's defaults sample");
    }
}
