using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Hosting;

namespace OnnxDecoder.Server;

/// <summary>
/// The host behind `onnx-decoder serve`: configuration (the "OnnxDecoder" section), the model
/// loaded in the background through <c>services.AddOnnxDecoder</c>, and the
/// OpenAI-compatible endpoints. Listens on 127.0.0.1 unless told otherwise.
/// </summary>
public static class OnnxDecoderServer
{
    public const string DefaultUrl = "http://127.0.0.1:8080";
    /// <summary>Configuration key of the API key: when set, /v1 requests need "Authorization: Bearer KEY".</summary>
    public const string ApiKeySetting = "OnnxDecoderServer:ApiKey";

    /// <param name="settings">Configuration entries (e.g. "OnnxDecoder:ModelPath") that override
    /// appsettings.json and environment variables.</param>
    /// <param name="url">Where Kestrel listens (port 0: any free port).</param>
    public static IHostBuilder CreateHostBuilder(IReadOnlyDictionary<string, string?> settings, string url = DefaultUrl) =>
        Host.CreateDefaultBuilder([])
            .ConfigureAppConfiguration(configuration => configuration.AddInMemoryCollection(settings))
            .ConfigureWebHostDefaults(web => web
                .UseUrls(url)
                .ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = OpenAIEndpoints.MaxRequestBodyBytes)
                .ConfigureServices((context, services) =>
                {
                    services.AddOnnxDecoder(context.Configuration.GetSection(OnnxDecoderOptions.Section));
                    services.AddRouting();
                })
                .Configure((context, app) =>
                {
                    if (context.Configuration[ApiKeySetting] is { Length: > 0 } apiKey) app.Use(OpenAIEndpoints.RequireApiKey(apiKey));
                    app.UseRouting();
                    app.UseEndpoints(endpoints => endpoints.MapOnnxDecoderApi());
                }));
}
