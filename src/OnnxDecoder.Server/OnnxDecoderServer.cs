using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Hosting;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

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
    /// <summary>Configuration key: "true" serves GET /metrics in Prometheus text format.</summary>
    public const string MetricsSetting = "OnnxDecoderServer:Metrics";
    /// <summary>Configuration key: an OTLP/HTTP endpoint (e.g. http://collector:4318) that metrics and traces are pushed to.</summary>
    public const string OtlpSetting = "OnnxDecoderServer:Otlp";
    public const string MetricsPath = "/metrics";

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
                    AddTelemetry(services, context.Configuration);
                })
                .Configure((context, app) =>
                {
                    if (context.Configuration[ApiKeySetting] is { Length: > 0 } apiKey) app.Use(OpenAIEndpoints.RequireApiKey(apiKey));
                    if (context.Configuration.GetValue<bool>(MetricsSetting)) app.UseOpenTelemetryPrometheusScrapingEndpoint(MetricsPath);
                    app.UseRouting();
                    app.UseEndpoints(endpoints => endpoints.MapOnnxDecoderApi());
                }));

    /// <summary>The "OnnxDecoder" meter (gen_ai histograms and the batcher's gauges) for the Prometheus
    /// scrape endpoint and/or OTLP; the "OnnxDecoder" activity source over OTLP as well.</summary>
    private static void AddTelemetry(IServiceCollection services, IConfiguration configuration)
    {
        bool prometheus = configuration.GetValue<bool>(MetricsSetting);
        string? otlp = configuration[OtlpSetting] is { Length: > 0 } endpoint ? endpoint : null;
        if (!prometheus && otlp is null) return;
        if (otlp is not null && (!Uri.TryCreate(otlp, UriKind.Absolute, out var parsed) || parsed.Scheme is not ("http" or "https")))
            throw new ArgumentException($"--otlp '{otlp}' is not an http(s) URL: give the collector's OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318");
        var telemetry = services.AddOpenTelemetry();
        telemetry.WithMetrics(metrics =>
        {
            metrics.AddMeter(OnnxDecoderTelemetry.Name);
            // Every scrape reads the gauges afresh (the exporter would otherwise answer from a 300 ms cache).
            if (prometheus) metrics.AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0);
            if (otlp is not null) metrics.AddOtlpExporter(o => Otlp(o, otlp, "v1/metrics"));
        });
        // Every generation span is kept: ASP.NET Core's request activity above it is not recorded (no
        // listener asks for it), so the default parent-based sampler would drop ours.
        if (otlp is not null)
            telemetry.WithTracing(tracing => tracing.AddSource(OnnxDecoderTelemetry.Name).SetSampler(new AlwaysOnSampler()).AddOtlpExporter(o => Otlp(o, otlp, "v1/traces")));
    }

    /// <summary>OTLP over HTTP/protobuf; a bare collector address gets the signal's standard path.</summary>
    private static void Otlp(OtlpExporterOptions options, string endpoint, string signalPath)
    {
        var uri = new Uri(endpoint);
        options.Protocol = OtlpExportProtocol.HttpProtobuf;
        options.Endpoint = uri.AbsolutePath is "/" or "" ? new Uri(uri, signalPath) : uri;
    }
}
