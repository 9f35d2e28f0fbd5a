using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace OnnxDecoder.Hosting;

/// <summary>
/// Metrics and traces after the OpenTelemetry gen_ai conventions: token usage, operation duration
/// and time to first token, tagged with the operation, the provider and the model.
/// </summary>
public static class OnnxDecoderTelemetry
{
    public const string Name = "OnnxDecoder";
    public static readonly ActivitySource ActivitySource = new(Name);
    private static readonly Meter Meter = new(Name);

    public static readonly Histogram<long> TokenUsage = Meter.CreateHistogram<long>("gen_ai.client.token.usage", "{token}", "Input and output tokens per operation");
    public static readonly Histogram<double> OperationDuration = Meter.CreateHistogram<double>("gen_ai.client.operation.duration", "s", "Duration of a generation");
    public static readonly Histogram<double> TimeToFirstToken = Meter.CreateHistogram<double>("gen_ai.server.time_to_first_token", "s", "Time until the first output token");

    internal static TagList Tags(string model, string operation = "chat") => new()
    {
        { "gen_ai.operation.name", operation },
        { "gen_ai.provider.name", "onnxdecoder" },
        { "gen_ai.request.model", model },
    };

    /// <summary>Records the time to the first output token of one operation ("chat" or "text_completion").</summary>
    public static void RecordFirstToken(string model, string operation, double seconds) => TimeToFirstToken.Record(seconds, Tags(model, operation));

    /// <summary>A span for one operation ("chat" or "text_completion") on <paramref name="model"/>, tagged after the gen_ai conventions.</summary>
    public static Activity? StartOperation(string operation, string model, ActivityKind kind)
    {
        var activity = ActivitySource.StartActivity($"{operation} {model}", kind);
        activity?.SetTag("gen_ai.operation.name", operation);
        activity?.SetTag("gen_ai.request.model", model);
        return activity;
    }

    /// <summary>Records the input and output tokens and the duration of one finished operation, as
    /// metrics and on its span.</summary>
    public static void RecordCompletion(string model, string operation, int inputTokens, int outputTokens, double seconds, Activity? activity, string finishReason)
    {
        var tags = Tags(model, operation);
        var input = tags; input.Add("gen_ai.token.type", "input");
        var output = tags; output.Add("gen_ai.token.type", "output");
        TokenUsage.Record(inputTokens, input);
        TokenUsage.Record(outputTokens, output);
        OperationDuration.Record(seconds, tags);
        activity?.SetTag("gen_ai.usage.input_tokens", inputTokens);
        activity?.SetTag("gen_ai.usage.output_tokens", outputTokens);
        activity?.SetTag("gen_ai.response.finish_reasons", finishReason);
    }
}

internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Loading model {ModelPath}")]
    public static partial void Loading(ILogger logger, string modelPath);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Model {Model} ready on {Provider} in {Milliseconds:F0} ms ({Sequences} sequences x {MaxLength} positions, KV cache {KvCacheMiB:F0} MiB, chat format {Format})")]
    public static partial void Ready(ILogger logger, string model, string provider, double milliseconds, int sequences, int maxLength, double kvCacheMiB, string format);

    [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "Loading model {ModelPath} failed")]
    public static partial void LoadFailed(ILogger logger, Exception exception, string modelPath);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "Generated {OutputTokens} tokens from {InputTokens} in {Milliseconds:F1} ms, stop: {StopReason}")]
    public static partial void Generated(ILogger logger, int inputTokens, int outputTokens, double milliseconds, string stopReason);

    [LoggerMessage(EventId = 5, Level = LogLevel.Warning, Message = "Request refused: {Waiting} requests already wait for a sequence (limit {Limit})")]
    public static partial void QueueFull(ILogger logger, int waiting, int limit);
}
