using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Model;

namespace OnnxDecoder.Router;

/// <summary>
/// The host behind `onnx-decoder route`: YARP forwards every request to one of the `serve`
/// replicas, chosen by <see cref="ReplicaPolicy"/>; replicas are probed on /health/ready (active) and
/// skipped after a failed connection (passive, <see cref="RetryBeforeResponse"/>). The router
/// keeps no state of its own beyond that: scaling out is more replicas in --backends.
/// </summary>
public static class OnnxDecoderRouter
{
    public const string DefaultUrl = "http://127.0.0.1:8000";
    public const string ClusterId = "replicas";
    /// <summary>The router's own health: 200 while at least one replica is available, else 503.</summary>
    public const string HealthPath = "/router/health";
    /// <summary>What each replica is probed on: its readiness (200 once its model is loaded and its batcher runs), not
    /// its liveness (/health, 200 while still loading), so a loading or restarting replica gets no requests.</summary>
    public const string ReplicaReadyPath = "/health/ready";

    public static WebApplication Build(RouterOptions options, string url = DefaultUrl, Action<ILoggingBuilder>? logging = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(url);
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = ConversationKey.MaxBodyBytes);
        if (logging is not null) logging(builder.Logging);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(new RetryBudget(options.RetryBudgetRatio, options.RetryBudgetBurst));
        builder.Services.AddSingleton<RetryBeforeResponse>();
        builder.Services.AddSingleton<ILoadBalancingPolicy>(new ReplicaPolicy(options.Affinity));
        builder.Services.AddReverseProxy().LoadFromMemory([Route()], [Cluster(options)]);

        var app = builder.Build();
        app.MapGet(HealthPath, (IProxyStateLookup state) =>
        {
            var cluster = state.TryGetCluster(ClusterId, out var c) ? c : null;
            int available = cluster?.DestinationsState.AvailableDestinations.Count ?? 0;
            var replicas = cluster?.Destinations.Values.ToDictionary(d => d.Model.Config.Address, d => new { active = d.Health.Active.ToString(), passive = d.Health.Passive.ToString() });
            return Results.Json(new { status = available > 0 ? "Healthy" : "Unhealthy", available, replicas }, statusCode: available > 0 ? 200 : 503);
        });
        // Read the body once for the conversation key; it stays buffered so a retry can resend it.
        app.Use(async (http, next) =>
        {
            if (HttpMethods.IsPost(http.Request.Method))
            {
                http.Request.EnableBuffering(bufferThreshold: 64 << 10, bufferLimit: ConversationKey.MaxBodyBytes);
                await ConversationKey.Capture(http).ConfigureAwait(false);
            }
            await next(http).ConfigureAwait(false);
        });
        app.MapReverseProxy(pipeline =>
        {
            var retry = pipeline.ApplicationServices.GetRequiredService<RetryBeforeResponse>();
            pipeline.Use((http, next) => retry.InvokeAsync(http, next));
            pipeline.UseLoadBalancing();
            pipeline.UsePassiveHealthChecks();
        });
        return app;
    }

    private static RouteConfig Route() => new()
    {
        RouteId = "all",
        ClusterId = ClusterId,
        Match = new RouteMatch { Path = "{**catch-all}" },
    };

    private static ClusterConfig Cluster(RouterOptions options) => new()
    {
        ClusterId = ClusterId,
        LoadBalancingPolicy = ReplicaPolicy.PolicyName,
        Destinations = options.Backends.Select((uri, i) => (uri, i)).ToDictionary(b => $"replica-{b.i}", b => new DestinationConfig { Address = b.uri.ToString(), Health = b.uri.ToString() }),
        HealthCheck = new HealthCheckConfig
        {
            Active = new ActiveHealthCheckConfig
            {
                Enabled = true,
                Interval = options.HealthInterval,
                Timeout = options.HealthTimeout,
                Policy = HealthCheckConstants.ActivePolicy.ConsecutiveFailures,
                Path = ReplicaReadyPath,
            },
            Passive = new PassiveHealthCheckConfig
            {
                Enabled = true,
                Policy = HealthCheckConstants.PassivePolicy.TransportFailureRate,
                ReactivationPeriod = options.ReactivationPeriod,
            },
            AvailableDestinationsPolicy = HealthCheckConstants.AvailableDestinations.HealthyAndUnknown,
        },
        HttpRequest = new Yarp.ReverseProxy.Forwarder.ForwarderRequestConfig { ActivityTimeout = TimeSpan.FromMinutes(5) },
    };
}
