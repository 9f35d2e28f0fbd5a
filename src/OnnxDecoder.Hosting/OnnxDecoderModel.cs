using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Hosting;

/// <summary>Every sequence slot is busy and the wait queue is full: retry later (HTTP 429/503).</summary>
public sealed class QueueFullException(string message) : Exception(message);

/// <summary>
/// The one loaded model of the service: its folder, tokenizer and chat format, and a pool of
/// sessions (one per concurrent sequence, each with its own KV cache) handed out per request.
/// Loaded in the background by <see cref="OnnxDecoderLoader"/>; requests wait for it.
/// </summary>
public sealed class OnnxDecoderModel : IDisposable
{
    private readonly OnnxDecoderOptions _options;
    private readonly ILogger<OnnxDecoderModel> _logger;
    private readonly TaskCompletionSource _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentBag<DecoderSession> _idle = [];
    private readonly List<DecoderSession> _all = [];
    private SemaphoreSlim? _slots;
    private int _waiting;

    public OnnxDecoderModel(IOptions<OnnxDecoderOptions> options, ILogger<OnnxDecoderModel> logger)
    {
        _options = options.Value;
        _logger = logger;
    }

    public bool IsReady => _loaded.Task.IsCompletedSuccessfully;
    public Exception? LoadError => _loaded.Task.Exception?.InnerException;
    public string ModelId { get; private set; } = "";
    public TextTokenizer Tokenizer { get; private set; } = null!;
    public ChatFormat ChatFormat { get; private set; }
    public OnnxDecoderOptions Options => _options;

    /// <summary>Opens every session; called once by the hosted loader.</summary>
    internal void Load()
    {
        try
        {
            var clock = Stopwatch.StartNew();
            Log.Loading(_logger, _options.ModelPath);
            var providers = new ExecutionProviderOptions
            {
                Preference = _options.ExecutionProviders.Select(ExecutionProviderOptions.Parse).ToList(),
                AllowFallback = _options.ExecutionProviders.Count > 1,
            };
            for (int i = 0; i < _options.MaxConcurrentSequences; i++)
            {
                var session = new DecoderSession(_options.ModelPath, new DecoderSessionOptions { Providers = providers, MaxLength = _options.MaxLength });
                _all.Add(session);
                _idle.Add(session);
            }
            var first = _all[0];
            Tokenizer = TextTokenizer.Load(first.Folder.Directory, first.Folder.BosTokenId);
            ChatFormat = ChatTemplate.Detect(first.Folder.Directory, Tokenizer);
            ModelId = Path.GetFileName(Path.TrimEndingDirectorySeparator(first.Folder.Directory));
            _slots = new SemaphoreSlim(_all.Count, _all.Count);
            Log.Ready(_logger, ModelId, ExecutionProviders.Name(first.Provider), clock.Elapsed.TotalMilliseconds, _all.Count, ChatFormat.ToString());
            _loaded.SetResult();
        }
        catch (Exception e)
        {
            Log.LoadFailed(_logger, e, _options.ModelPath);
            _loaded.SetException(e);
        }
    }

    /// <summary>Waits for a free sequence (within the queue limit) and lends its session.</summary>
    public async Task<Lease> AcquireAsync(CancellationToken cancellationToken)
    {
        await _loaded.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (!_slots!.Wait(0))
        {
            int waiting = Interlocked.Increment(ref _waiting);
            try
            {
                if (waiting > _options.MaxQueueLength)
                {
                    Log.QueueFull(_logger, waiting - 1, _options.MaxQueueLength);
                    throw new QueueFullException($"all {_all.Count} sequences are busy and {waiting - 1} requests already wait (limit {_options.MaxQueueLength}): retry later");
                }
                await _slots.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                Interlocked.Decrement(ref _waiting);
            }
        }
        _idle.TryTake(out var session);
        return new Lease(this, session!);
    }

    /// <summary>A session lent to one request; disposing returns it.</summary>
    public sealed class Lease(OnnxDecoderModel owner, DecoderSession session) : IDisposable
    {
        public DecoderSession Session { get; } = session;
        private int _returned;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _returned, 1) == 1) return;
            Session.Reset();
            owner._idle.Add(Session);
            owner._slots!.Release();
        }
    }

    public void Dispose()
    {
        foreach (var session in _all) session.Dispose();
        _all.Clear();
        _slots?.Dispose();
    }
}

/// <summary>Loads the model when the host starts, in the background, so start-up is not blocked.</summary>
internal sealed class OnnxDecoderLoader(OnnxDecoderModel model) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(model.Load, stoppingToken);
}

/// <summary>Degraded while the model loads, Healthy when ready, Unhealthy if loading failed.</summary>
public sealed class OnnxDecoderHealthCheck(OnnxDecoderModel model) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(model.LoadError is { } error ? HealthCheckResult.Unhealthy($"loading {model.Options.ModelPath} failed: {error.Message}", error)
            : model.IsReady ? HealthCheckResult.Healthy($"{model.ModelId} ready")
            : HealthCheckResult.Degraded($"loading {model.Options.ModelPath}"));
}
