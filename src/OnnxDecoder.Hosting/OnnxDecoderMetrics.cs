using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Hosting;

namespace OnnxDecoder.Hosting;

/// <summary>
/// The batcher's state as OpenTelemetry instruments on the "OnnxDecoder" meter, beside the gen_ai
/// histograms of <see cref="OnnxDecoderTelemetry"/>: queue length, active sequences, KV cache rows in
/// use (and their limit), prompt tokens reused from the prefill cache, generated tokens, and the
/// decode rate since the previous collection. Read when a collector asks (a Prometheus scrape, an
/// OTLP export); nothing is counted on the decode path for them.
/// </summary>
public sealed class OnnxDecoderMetrics : IDisposable
{
    private readonly Meter _meter;
    private readonly OnnxDecoderModel _model;
    private readonly object _rateGate = new();
    private long _lastTokens, _lastTimestamp = Stopwatch.GetTimestamp();

    public OnnxDecoderMetrics(OnnxDecoderModel model, IMeterFactory meters)
    {
        _model = model;
        _meter = meters.Create(OnnxDecoderTelemetry.Name);
        _meter.CreateObservableGauge("onnxdecoder.queue.length", () => Observe(b => b.QueueLength), "{request}", "Requests waiting for a free sequence");
        _meter.CreateObservableGauge("onnxdecoder.sequences.active", () => Observe(b => b.ActiveSequences), "{sequence}", "Sequences being prefilled or decoded");
        _meter.CreateObservableGauge("onnxdecoder.kv_cache.rows.used", () => Observe(b => b.RowsInUse), "{row}", "Rows of the batch KV cache holding a decoding sequence");
        _meter.CreateObservableGauge("onnxdecoder.kv_cache.rows.limit", () => Observe(b => b.MaxSequences), "{row}", "Rows of the batch KV cache");
        _meter.CreateObservableCounter("onnxdecoder.prefix.reused_tokens", () => Observe(b => b.ReusedPrefixTokens), "{token}",
            "Prompt tokens not run again because the previous prompt began with them");
        _meter.CreateObservableCounter("onnxdecoder.tokens.decoded", () => Observe(b => b.RowSteps), "{token}", "Tokens produced by batched decode steps");
        _meter.CreateObservableCounter("onnxdecoder.speculative.drafted_tokens", () => Observe(b => b.DraftedTokens), "{token}",
            "Tokens drafted for speculative verification");
        _meter.CreateObservableCounter("onnxdecoder.speculative.accepted_tokens", () => Observe(b => b.AcceptedDraftTokens), "{token}",
            "Drafted tokens the model accepted (over drafted: the acceptance rate)");
        _meter.CreateObservableGauge("onnxdecoder.tokens.per_second", ObserveRate, null, "Decoded tokens per second since the previous collection");
    }

    private IEnumerable<Measurement<long>> Observe(Func<Runtime.ContinuousBatcher, long> read)
    {
        if (_model.Batcher is { } batcher) yield return new Measurement<long>(read(batcher), Tags());
    }

    private IEnumerable<Measurement<double>> ObserveRate()
    {
        if (_model.Batcher is not { } batcher) yield break;
        double rate;
        lock (_rateGate)
        {
            long tokens = batcher.RowSteps, now = Stopwatch.GetTimestamp();
            double seconds = Stopwatch.GetElapsedTime(_lastTimestamp, now).TotalSeconds;
            rate = seconds > 0 ? (tokens - _lastTokens) / seconds : 0;
            (_lastTokens, _lastTimestamp) = (tokens, now);
        }
        yield return new Measurement<double>(rate, Tags());
    }

    private KeyValuePair<string, object?>[] Tags() =>
        [new("gen_ai.provider.name", "onnxdecoder"), new("gen_ai.request.model", _model.ModelId)];

    public void Dispose() => _meter.Dispose();
}

/// <summary>Creates the instruments when the host starts, so they exist before the first collection.</summary>
internal sealed class OnnxDecoderMetricsStarter(OnnxDecoderMetrics metrics) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => Task.FromResult(metrics);
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
