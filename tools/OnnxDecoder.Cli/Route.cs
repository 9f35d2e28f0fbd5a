using System.CommandLine;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Router;

namespace OnnxDecoder.Cli;

/// <summary>`onnx-decoder route`: a YARP reverse proxy in front of several `serve` replicas.</summary>
public static class Route
{
    public static Command Create()
    {
        var backends = new Option<string>("--backends") { Description = "replica base URLs separated by commas, e.g. http://10.0.0.5:8080,http://10.0.0.6:8080", Required = true };
        var urls = new Option<string>("--urls") { Description = "where the router listens (several separated by ';')", DefaultValueFactory = _ => OnnxDecoderRouter.DefaultUrl };
        var affinity = new Option<string>("--affinity") { Description = "conversation: keep each conversation on one replica (its prefix stays cached); none: round-robin", DefaultValueFactory = _ => "conversation" };
        var command = new Command("route", "Route OpenAI-compatible requests across `serve` replicas (conversation affinity, health checks on /health/ready, retries before any response byte)")
        {
            backends, urls, affinity,
        };
        command.SetAction(r => Commands.Guard(() =>
        {
            var options = new RouterOptions { Backends = RouterOptions.ParseBackends(r.GetValue(backends)!), Affinity = RouterOptions.ParseAffinity(r.GetValue(affinity)!) };
            using var app = OnnxDecoderRouter.Build(options, r.GetValue(urls)!);
            app.Start();
            Console.Error.WriteLine($"onnx-decoder: routing {string.Join(", ", app.Urls)} to {options.Backends.Count} replicas (affinity {options.Affinity.ToString().ToLowerInvariant()}; Ctrl+C stops)");
            app.WaitForShutdown();
            return 0;
        }));
        return command;
    }
}
