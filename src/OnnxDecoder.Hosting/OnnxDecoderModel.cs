using System.Diagnostics;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Hosting;

/// <summary>
/// The one loaded model of the service: its folder, tokenizer and chat format, and the
/// <see cref="ContinuousBatcher"/> that decodes every request's tokens in shared batched runs
/// (MaxConcurrentSequences rows, MaxQueueLength waiting). Loaded in the background by
/// <see cref="OnnxDecoderLoader"/>; requests wait for it.
/// </summary>
public sealed class OnnxDecoderModel : IDisposable
{
    private readonly OnnxDecoderOptions _options;
    private readonly ILogger<OnnxDecoderModel> _logger;
    private readonly TaskCompletionSource _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private DecoderModel? _model;
    private ContinuousBatcher? _batcher;

    public OnnxDecoderModel(IOptions<OnnxDecoderOptions> options, ILogger<OnnxDecoderModel> logger)
    {
        _options = options.Value;
        _logger = logger;
    }

    public bool IsReady => _loaded.Task.IsCompletedSuccessfully;
    public Exception? LoadError => _loaded.Task.Exception?.InnerException;
    public string ModelId { get; private set; } = "";
    public TextTokenizer Tokenizer { get; private set; } = null!;
    public ChatFormat ChatFormat => ChatPrompt.Format;
    /// <summary>How chat prompts are built: the folder's own chat template, else its hand-written format.</summary>
    public ChatPrompt ChatPrompt { get; private set; } = null!;
    public OnnxDecoderOptions Options => _options;
    /// <summary>The batcher; null until loaded.</summary>
    public ContinuousBatcher? Batcher => _batcher;
    /// <summary>Pools embeddings when the model has the hidden_states output (export --hidden-states); else null.</summary>
    public EmbeddingRunner? Embeddings { get; private set; }
    /// <summary>Positions one sequence may use (prompt and output), once loaded.</summary>
    public int MaxLength => _batcher?.MaxLength ?? 0;
    /// <summary>The model's vocabulary size (logits per position), once loaded.</summary>
    public int VocabSize => _model?.Folder.VocabSize ?? 0;

    /// <summary>Sampling when a request gives no values: the folder's search defaults, with the
    /// configured default temperature over them.</summary>
    public SamplingOptions SamplingDefaults => _options.DefaultTemperature is { } temperature
        ? (_model?.Folder.Search.Sampling ?? new SamplingOptions()) with { Temperature = temperature }
        : _model?.Folder.Search.Sampling ?? new SamplingOptions();

    /// <summary>The folder's search.max_length, when it sets one (prompt included).</summary>
    public SearchDefaults SearchDefaults => _model?.Folder.Search ?? Runtime.SearchDefaults.None;

    /// <summary>Loads the model and starts the batcher; called once by the hosted loader.</summary>
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
                NativeKernels = _options.NativeKernels,
                NativeMatMul = _options.NativeMatMul,
            };
            _model = new DecoderModel(_options.ModelPath, providers);
            Tokenizer = TextTokenizer.Load(_model.Folder.Directory, _model.Folder.BosTokenId);
            ChatPrompt = ChatPrompt.ForModel(_model.Folder.Directory, Tokenizer);
            ModelId = Path.GetFileName(Path.TrimEndingDirectorySeparator(_model.Folder.Directory));
            Embeddings = EmbeddingRunner.Supports(_model) ? new EmbeddingRunner(_model) : null;
            _batcher = new ContinuousBatcher(_model, Tokenizer, new BatcherOptions
            {
                MaxSequences = _options.MaxConcurrentSequences,
                MaxQueueLength = _options.MaxQueueLength,
                MaxLength = _options.MaxLength,
                PrefillChunk = _options.PrefillChunk,
                MaxKvCacheBytes = _options.MaxKvCacheMiB * (1L << 20),
                Speculative = _options.Speculative,
                DraftTokens = _options.DraftTokens,
                DraftProviders = providers,
            });
            Log.Ready(_logger, ModelId, ExecutionProviders.Name(_model.Provider), clock.Elapsed.TotalMilliseconds, _options.MaxConcurrentSequences,
                _batcher.MaxLength, _batcher.KvCacheBytes / 1048576.0, ChatPrompt.Description);
            _loaded.SetResult();
        }
        catch (Exception e)
        {
            Log.LoadFailed(_logger, e, _options.ModelPath);
            _batcher?.Dispose();
            _model?.Dispose();
            _batcher = null;
            _model = null;
            _loaded.SetException(e);
        }
    }

    /// <summary>Waits until the model is loaded (throws its load error if loading failed).</summary>
    public Task WaitUntilLoadedAsync(CancellationToken cancellationToken) => _loaded.Task.WaitAsync(cancellationToken);

    /// <summary>
    /// Queues a generation (waiting for the model to load first). Throws <see cref="QueueFullException"/>
    /// when every sequence is busy and the queue is full, <see cref="ContextFullException"/> when the
    /// prompt does not fit. With <see cref="OnnxDecoderOptions.Speculative"/> the request decodes speculatively
    /// unless <paramref name="speculative"/> is false.
    /// </summary>
    public async Task<BatchedSequence> SubmitAsync(IReadOnlyList<int> promptIds, GenerationOptions options, CancellationToken cancellationToken, bool speculative = true)
    {
        await WaitUntilLoadedAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return _batcher!.Submit(promptIds, options, cancellationToken, speculative: speculative);
        }
        catch (QueueFullException)
        {
            Log.QueueFull(_logger, _batcher!.Outstanding - _options.MaxConcurrentSequences, _options.MaxQueueLength);
            throw;
        }
    }

    public void Dispose()
    {
        _batcher?.Dispose();
        _model?.Dispose();
    }
}

/// <summary>Loads the model when the host starts, in the background, so start-up is not blocked.</summary>
internal sealed class OnnxDecoderLoader(OnnxDecoderModel model) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(model.Load, stoppingToken);
}

/// <summary>
/// Degraded while the model loads, Healthy when it is loaded and its batcher runs, Unhealthy if loading failed
/// or the batcher stopped. Tagged <see cref="ReadyTag"/>: a readiness endpoint filters on the tag and
/// counts Degraded as not ready, a liveness endpoint counts it as alive.
/// </summary>
public sealed class OnnxDecoderHealthCheck(OnnxDecoderModel model) : IHealthCheck
{
    public const string Name = "onnxdecoder";
    /// <summary>The tag of the checks that say whether requests can be served now.</summary>
    public const string ReadyTag = "ready";

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(model.LoadError is { } error ? HealthCheckResult.Unhealthy($"loading {model.Options.ModelPath} failed: {error.Message}", error)
            : !model.IsReady ? HealthCheckResult.Degraded($"loading {model.Options.ModelPath}")
            : model.Batcher is { IsRunning: true } ? HealthCheckResult.Healthy($"{model.ModelId} ready")
            : HealthCheckResult.Unhealthy($"{model.ModelId}: the batcher has stopped (the server is shutting down)"));
}
