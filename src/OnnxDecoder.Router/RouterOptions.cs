namespace OnnxDecoder.Router;

/// <summary>How requests choose a replica.</summary>
public enum Affinity
{
    /// <summary>A conversation (same first messages, or same session header) always goes to the same
    /// healthy replica, so its follow-up turns find their prefix in that replica's prefill cache.</summary>
    Conversation,
    /// <summary>Round-robin over the healthy replicas.</summary>
    None,
}

/// <summary>What `onnx-decoder route` is told: the replicas, how to pick one, and how to watch them.</summary>
public sealed record RouterOptions
{
    /// <summary>Base addresses of the `serve` replicas, e.g. http://10.0.0.5:8080.</summary>
    public required IReadOnlyList<Uri> Backends { get; init; }
    public Affinity Affinity { get; init; } = Affinity.Conversation;
    /// <summary>How often each replica's /health/ready is probed.</summary>
    public TimeSpan HealthInterval { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan HealthTimeout { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>How long a replica that refused a connection is skipped before it is tried again.</summary>
    public TimeSpan ReactivationPeriod { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Other replicas tried for one request whose replica failed before sending a byte.</summary>
    public int MaxRetriesPerRequest { get; init; } = 2;
    /// <summary>Retries earned per proxied request (0.2: at most one retry in five requests, sustained) ...</summary>
    public double RetryBudgetRatio { get; init; } = 0.2;
    /// <summary>... on top of this many that may be spent at once (a replica dying with requests in flight).</summary>
    public int RetryBudgetBurst { get; init; } = 20;

    /// <summary>Parses --backends: URLs separated by commas; each must be absolute http(s).</summary>
    public static IReadOnlyList<Uri> ParseBackends(string text)
    {
        var backends = new List<Uri>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Uri.TryCreate(part, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
                throw new ArgumentException($"--backends: '{part}' is not an http(s) URL: give each replica as http://HOST:PORT, separated by commas");
            if (backends.Contains(uri)) throw new ArgumentException($"--backends: '{part}' is listed twice: give each replica once");
            backends.Add(uri);
        }
        if (backends.Count == 0) throw new ArgumentException("--backends is empty: give at least one replica as http://HOST:PORT");
        return backends;
    }

    public static Affinity ParseAffinity(string text) => text.Trim().ToLowerInvariant() switch
    {
        "conversation" => Affinity.Conversation,
        "none" => Affinity.None,
        _ => throw new ArgumentException($"--affinity '{text}' is not known: use conversation or none"),
    };
}
