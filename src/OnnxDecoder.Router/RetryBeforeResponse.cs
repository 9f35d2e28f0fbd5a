using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace OnnxDecoder.Router;

/// <summary>
/// A bounded retry budget shared by all requests: each proxied request earns
/// <see cref="RouterOptions.RetryBudgetRatio"/> of a retry, up to <see cref="RouterOptions.RetryBudgetBurst"/>
/// saved; a retry spends one. A fleet that is failing as a whole is not hit with a storm of retries.
/// </summary>
public sealed class RetryBudget(double ratio, int burst)
{
    private readonly object _gate = new();
    private double _tokens = burst;
    public long Spent { get; private set; }
    public long Refused { get; private set; }

    public void Earn()
    {
        lock (_gate) _tokens = Math.Min(burst, _tokens + ratio);
    }

    public bool TrySpend()
    {
        lock (_gate)
        {
            if (_tokens < 1) { Refused++; return false; }
            _tokens -= 1;
            Spent++;
            return true;
        }
    }
}

/// <summary>
/// Passive failure handling in the proxy pipeline: when forwarding to a replica fails before any of its
/// response reached the client (connection refused or reset, no response headers, or headers and then
/// nothing), the replica is marked unhealthy for <see cref="RouterOptions.ReactivationPeriod"/>
/// and the request (its body buffered) is sent to another replica, within the per-request limit and
/// the shared <see cref="RetryBudget"/>. Once a response byte is on its way the failure is the client's to see.
/// </summary>
public sealed partial class RetryBeforeResponse(RouterOptions options, RetryBudget budget, IDestinationHealthUpdater health, ILogger<RetryBeforeResponse> logger)
{
    public async Task InvokeAsync(HttpContext context, Func<Task> next)
    {
        budget.Earn();
        var proxy = context.Features.Get<IReverseProxyFeature>()!;
        var candidates = proxy.AvailableDestinations; // load balancing narrows the feature's list to its pick
        var tried = new List<DestinationState>();
        for (int attempt = 0; ; attempt++)
        {
            await next().ConfigureAwait(false);
            var error = context.Features.Get<IForwarderErrorFeature>();
            // Every replica is out (loading, failed, or down): the OpenAI error shape with Retry-After, not YARP's empty 503.
            if (error?.Error == ForwarderError.NoAvailableDestinations && !context.Response.HasStarted)
            {
                await NoReplica(context, "no replica is ready (each is loading, failed to load or is down)").ConfigureAwait(false);
                return;
            }
            if (error is null || context.Response.HasStarted || !BeforeResponse(error.Error) || proxy.ProxiedDestination is not { } failed) return;

            health.SetPassive(proxy.Route.Cluster!, failed, DestinationHealth.Unhealthy, options.ReactivationPeriod);
            tried.Add(failed);
            var remaining = candidates.Where(d => !tried.Contains(d)).ToList();
            if (remaining.Count == 0 || attempt >= options.MaxRetriesPerRequest || !budget.TrySpend())
            {
                Log.GaveUp(logger, failed.DestinationId, attempt + 1, error.Error.ToString());
                await NoReplica(context, $"the replica failed before answering ({error.Error}) and {(remaining.Count == 0 ? "no other replica is healthy" : "the retry budget is spent")}").ConfigureAwait(false);
                return;
            }
            Log.Retrying(logger, failed.DestinationId, error.Error.ToString());
            proxy.AvailableDestinations = remaining;
            context.Features.Set<IForwarderErrorFeature>(null);
            context.Response.StatusCode = StatusCodes.Status200OK;
            context.Response.Headers.Clear();
            if (context.Request.Body.CanSeek) context.Request.Body.Position = 0;
        }
    }

    /// <summary>
    /// Failures on the replica's side: no response (refused, reset, timed out, the request body not taken), or a
    /// response that broke off before its body began. YARP writes a replica's status and headers to the client
    /// only with the first body bytes, so while the client response has not started (checked by the caller)
    /// nothing of it reached the client: a replica killed between sending its headers and its first event
    /// (a stream's start) leaves the client nothing, and YARP's 502 would be the only answer.
    /// </summary>
    private static bool BeforeResponse(ForwarderError error) =>
        error is ForwarderError.Request or ForwarderError.RequestTimedOut or ForwarderError.RequestBodyDestination or ForwarderError.ResponseBodyDestination;

    private static async Task NoReplica(HttpContext context, string message)
    {
        context.Features.Set<IForwarderErrorFeature>(null);
        context.Response.Headers.Clear();
        context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        context.Response.Headers.RetryAfter = "1";
        await context.Response.WriteAsJsonAsync(new { error = new { message = message + ": retry shortly", type = "server_error", param = (string?)null, code = "no_replica" } }).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 201, Level = LogLevel.Warning, Message = "Replica {Destination} failed before answering ({Error}); retrying on another")]
        public static partial void Retrying(ILogger logger, string destination, string error);

        [LoggerMessage(EventId = 202, Level = LogLevel.Error, Message = "Replica {Destination} failed before answering ({Error}) after {Attempts} attempts; no retry left")]
        public static partial void GaveUp(ILogger logger, string destination, int attempts, string error);
    }
}
