using System.CommandLine;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Server;

namespace OnnxDecoder.Cli;

/// <summary>`onnx-decoder serve`: the OpenAI-compatible HTTP server over one model folder.</summary>
public static class Serve
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "model folder written by `export`", Required = true };
        var host = new Option<string>("--host") { Description = "address to listen on (127.0.0.1: this machine only)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0: any free port)", DefaultValueFactory = _ => 8080 };
        var urls = new Option<string?>("--urls") { Description = "where to listen, e.g. http://127.0.0.1:8080 (several separated by ';'); overrides --host and --port" };
        var sequences = new Option<int>("--sequences") { Description = "sequences decoded together in one batch (each with its own KV cache row)", DefaultValueFactory = _ => 8 };
        var queue = new Option<int>("--queue") { Description = "requests that may wait for a free sequence before 429s", DefaultValueFactory = _ => 64 };
        var maxLength = new Option<int?>("--max-length") { Description = "positions per sequence (default: the model's context)" };
        var maxKv = new Option<long?>("--max-kv-mib") { Description = "refuse to start when the KV caches would exceed this many MiB" };
        var prefillChunk = new Option<int>("--prefill-chunk") { Description = "prefill prompts in chunks of this many tokens between decode steps (0: whole)", DefaultValueFactory = _ => 0 };
        var temperature = new Option<float?>("--temperature") { Description = "temperature when a request gives none (default: the model folder's search values, else 0: greedy)" };
        var ep = new Option<string>("--ep") { Description = "execution providers in order of preference, e.g. cuda,cpu", DefaultValueFactory = _ => "cpu" };
        var nativeKernels = Commands.NativeKernelsOption(); // the spelling of generate, chat and bench
        var apiKey = new Option<string?>("--api-key") { Description = "require \"Authorization: Bearer KEY\" on /v1 (default: $ONNXDECODER_API_KEY; none: open)" };
        var metrics = new Option<bool>("--metrics") { Description = "serve GET /metrics in Prometheus format (gen_ai histograms, queue, sequences, KV rows, prefix reuse, tokens/s)" };
        var speculative = Commands.SpeculativeOption(); // the spelling of generate and bench
        var draftTokens = Commands.DraftTokensOption();
        var otlp = new Option<string?>("--otlp") { Description = "push metrics and traces over OTLP/HTTP to this endpoint, e.g. http://127.0.0.1:4318" };
        var command = new Command("serve", "Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health, /health/ready)")
        {
            model, host, port, urls, sequences, queue, maxLength, maxKv, prefillChunk, temperature, ep, nativeKernels, apiKey, metrics, otlp, speculative, draftTokens,
        };
        command.SetAction(r => Commands.Guard(() =>
        {
            var native = Commands.ParseNativeKernels(r.GetValue(nativeKernels)!);
            var settings = new Dictionary<string, string?>
            {
                ["OnnxDecoder:ModelPath"] = r.GetValue(model),
                ["OnnxDecoder:MaxConcurrentSequences"] = r.GetValue(sequences).ToString(),
                ["OnnxDecoder:MaxQueueLength"] = r.GetValue(queue).ToString(),
                ["OnnxDecoder:PrefillChunk"] = r.GetValue(prefillChunk).ToString(),
                ["OnnxDecoder:DefaultTemperature"] = r.GetValue(temperature)?.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["OnnxDecoder:MaxLength"] = r.GetValue(maxLength)?.ToString(),
                ["OnnxDecoder:MaxKvCacheMiB"] = r.GetValue(maxKv)?.ToString(),
                ["OnnxDecoder:Speculative"] = r.GetValue(speculative),
                ["OnnxDecoder:DraftTokens"] = r.GetValue(draftTokens).ToString(),
                ["OnnxDecoder:NativeKernels"] = native.Kernels ? "true" : "false",
                ["OnnxDecoder:NativeMatMul"] = native.MatMul ? "true" : "false",
                [OnnxDecoderServer.ApiKeySetting] = r.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("ONNXDECODER_API_KEY"),
                [OnnxDecoderServer.MetricsSetting] = r.GetValue(metrics) ? "true" : null,
                [OnnxDecoderServer.OtlpSetting] = r.GetValue(otlp),
                // A host that fails to start is reported below in one line; the host's own log of it is a stack trace.
                ["Logging:LogLevel:Microsoft.Extensions.Hosting.Internal.Host"] = "None",
            };
            var providers = r.GetValue(ep)!.Split(',', StringSplitOptions.RemoveEmptyEntries);
            for (int i = 0; i < providers.Length; i++) settings[$"OnnxDecoder:ExecutionProviders:{i}"] = providers[i];
            string address = r.GetValue(host)!.Contains(':') ? $"[{r.GetValue(host)}]" : r.GetValue(host)!;
            _ = Runtime.ModelFolder.Open(r.GetValue(model)!); // a missing or broken folder fails here, naming the file
            if (r.GetValue(speculative) is { } drafter && drafter != "ngram") _ = Runtime.ModelFolder.Open(drafter); // names the draft folder's broken file
            if (r.GetValue(draftTokens) is < 1 or > 64) throw new ArgumentException($"--draft-tokens {r.GetValue(draftTokens)}: draft 1 to 64 tokens per step");
            if (r.GetValue(port) is < 0 or > 65535) throw new ArgumentException($"--port {r.GetValue(port)} is not a TCP port: use 0 to 65535 (0: any free port)");
            using var app = OnnxDecoderServer.CreateHostBuilder(settings, r.GetValue(urls) ?? $"http://{address}:{r.GetValue(port)}").Build();
            app.Start();
            var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
            Console.Error.WriteLine($"onnx-decoder: serving {r.GetValue(model)} on {string.Join(", ", addresses)} (Ctrl+C stops)");
            app.WaitForShutdown();
            return 0;
        }));
        return command;
    }
}
