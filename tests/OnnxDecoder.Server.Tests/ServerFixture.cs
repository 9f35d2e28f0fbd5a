using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Server.Tests;

/// <summary>stories260K exported once for every server test.</summary>
[SetUpFixture]
public class ServerFixture
{
    private static string _root = "";
    public static string Model { get; private set; } = "";

    [OneTimeSetUp]
    public void Export()
    {
        _root = TestPaths.NewTempFolder("server-tests");
        Model = Path.Combine(_root, "stories260k");
        ModelFolderWriter.Export(Exporters.Tests.Stories260K.LegacyCheckpoint, Exporters.Tests.Stories260K.Tokenizer, Model, new ExportOptions { Lowering = Lowering.Ort });
    }

    [OneTimeTearDown] public void Delete() => Directory.Delete(_root, recursive: true);

    public static Dictionary<string, string?> Settings(string model, int sequences = 4, int queue = 64, int? maxLength = null) => new()
    {
        ["OnnxDecoder:ModelPath"] = model,
        ["OnnxDecoder:MaxConcurrentSequences"] = sequences.ToString(),
        ["OnnxDecoder:MaxQueueLength"] = queue.ToString(),
        ["OnnxDecoder:MaxLength"] = maxLength?.ToString(),
        ["Logging:LogLevel:Default"] = "Warning",
    };

    /// <summary>GET <paramref name="path"/>: its status and JSON body.</summary>
    public static async Task<(HttpStatusCode Status, JsonNode Body)> GetJson(HttpClient client, string path)
    {
        var response = await client.GetAsync(path);
        return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!);
    }

    /// <summary>Asks <paramref name="path"/> until <paramref name="done"/> holds or <paramref name="timeout"/> (default 20 s,
    /// for a loaded machine) passes; returns the last answer.</summary>
    public static async Task<(HttpStatusCode Status, JsonNode Body)> PollJson(HttpClient client, string path,
        Func<HttpStatusCode, JsonNode, bool> done, TimeSpan? timeout = null)
    {
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var (status, body) = await GetJson(client, path);
            if (done(status, body) || deadline.Elapsed > (timeout ?? TimeSpan.FromSeconds(20))) return (status, body);
            await Task.Delay(50);
        }
    }

    /// <summary>A folder beside the model whose genai_config.json is the model's and whose model.onnx is not a model:
    /// its load fails in ONNX Runtime, after the folder's config was read.</summary>
    public static string UnloadableModel(string name)
    {
        string broken = Path.Combine(Path.GetDirectoryName(Model)!, name);
        Directory.CreateDirectory(broken);
        File.Copy(Path.Combine(Model, "genai_config.json"), Path.Combine(broken, "genai_config.json"), overwrite: true);
        File.WriteAllText(Path.Combine(broken, "model.onnx"), "not a model");
        return broken;
    }

    /// <summary>What `generate` gives for this prompt: one sequence alone, greedy.</summary>
    public static GenerationResult Greedy(string prompt, int maxTokens)
    {
        using var session = new DecoderSession(Model);
        return new Generator(session, TextTokenizer.Load(Model, session.Folder.BosTokenId)).Generate(prompt, new GenerationOptions { MaxNewTokens = maxTokens });
    }

    /// <summary>The real server (Kestrel) on a free loopback port; returns its base address.</summary>
    public static async Task<(IHost Host, Uri Address)> StartOnLoopback(Dictionary<string, string?> settings)
    {
        var host = OnnxDecoderServer.CreateHostBuilder(settings, "http://127.0.0.1:0").Build();
        await host.StartAsync();
        var address = host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return (host, new Uri(address));
    }
}

/// <summary>The server in memory (TestServer) for request/response tests.</summary>
public sealed class ServerFactory(Dictionary<string, string?> settings) : WebApplicationFactory<ServerFactory>
{
    protected override IHostBuilder CreateHostBuilder() => OnnxDecoderServer.CreateHostBuilder(settings);

    protected override void ConfigureWebHost(Microsoft.AspNetCore.Hosting.IWebHostBuilder builder) =>
        Microsoft.AspNetCore.Hosting.HostingAbstractionsWebHostBuilderExtensions.UseContentRoot(builder, AppContext.BaseDirectory);
}
