using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;
using AIChatMessage = Microsoft.Extensions.AI.ChatMessage;
using TemplateMessage = OnnxDecoder.Runtime.Tokenization.ChatMessage;

namespace OnnxDecoder.Hosting;

/// <summary>
/// Microsoft.Extensions.AI's IChatClient over the loaded model: the conversation is rendered in the
/// family's chat format, ChatOptions map onto sampling (temperature, top-p, top-k, max output tokens,
/// stop sequences, seed), usage is reported, and each request takes a row of the model's continuous batch.
/// </summary>
public sealed class OnnxDecoderChatClient(OnnxDecoderModel model, ILogger<OnnxDecoderChatClient> logger) : IChatClient
{
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<AIChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        ChatResponseUpdate? last = null;
        UsageDetails? usage = null;
        await foreach (var update in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(update.Text);
            last = update;
            usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
        }
        return new ChatResponse(new AIChatMessage(ChatRole.Assistant, text.ToString()))
        {
            ModelId = model.ModelId,
            FinishReason = last?.FinishReason,
            Usage = usage,
            ResponseId = last?.ResponseId,
            CreatedAt = last?.CreatedAt,
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<AIChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var conversation = messages.Select(m => new TemplateMessage(m.Role == ChatRole.System ? "system" : m.Role == ChatRole.Assistant ? "assistant" : "user", m.Text)).ToList();
        if (options?.Instructions is { Length: > 0 } instructions) conversation.Insert(0, new TemplateMessage("system", instructions));
        await model.WaitUntilLoadedAsync(cancellationToken).ConfigureAwait(false);
        var promptIds = model.ChatPrompt.Encode(conversation, model.Tokenizer);
        var generation = Map(options);
        string responseId = Guid.NewGuid().ToString("N");

        using var activity = OnnxDecoderTelemetry.StartOperation("chat", model.ModelId, ActivityKind.Internal);
        activity?.SetTag("gen_ai.request.max_tokens", generation.MaxNewTokens);
        activity?.SetTag("gen_ai.request.temperature", generation.Sampling.Temperature);
        var clock = Stopwatch.StartNew();
        bool first = true;
        using var sequence = await model.SubmitAsync(promptIds, generation, cancellationToken).ConfigureAwait(false);
        await foreach (var token in sequence.Tokens.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            if (first)
            {
                OnnxDecoderTelemetry.RecordFirstToken(model.ModelId, "chat", clock.Elapsed.TotalSeconds);
                first = false;
            }
            if (token.Text.Length > 0)
                yield return new ChatResponseUpdate(ChatRole.Assistant, token.Text) { ResponseId = responseId, ModelId = model.ModelId, CreatedAt = DateTimeOffset.UtcNow };
        }
        var result = await sequence.Completion.ConfigureAwait(false);

        var finish = result.StopReason is StopReason.MaxTokens or StopReason.ContextFull ? ChatFinishReason.Length : ChatFinishReason.Stop;
        var usage = new UsageDetails
        {
            InputTokenCount = promptIds.Length, OutputTokenCount = result.TokenIds.Length, TotalTokenCount = promptIds.Length + result.TokenIds.Length,
            CachedInputTokenCount = sequence.CachedPromptTokens,
        };
        OnnxDecoderTelemetry.RecordCompletion(model.ModelId, "chat", promptIds.Length, result.TokenIds.Length, clock.Elapsed.TotalSeconds, activity, finish.Value);
        Log.Generated(logger, promptIds.Length, result.TokenIds.Length, clock.Elapsed.TotalMilliseconds, result.StopReason.ToString());
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(usage)])
        {
            ResponseId = responseId, ModelId = model.ModelId, FinishReason = finish, CreatedAt = DateTimeOffset.UtcNow,
        };
    }

    /// <summary>ChatOptions over the model's defaults. TopK, TopP, Temperature and Seed are ChatOptions
    /// properties; the other rows of <see cref="SamplingParameters"/> (min_p, repetition_penalty) are
    /// read from AdditionalProperties by their table names. An out-of-range value throws
    /// <see cref="ArgumentOutOfRangeException"/> naming the option.</summary>
    private GenerationOptions Map(ChatOptions? options)
    {
        var sampling = model.SamplingDefaults;
        foreach (var parameter in SamplingParameters.All)
        {
            var (name, value) = parameter.Name switch
            {
                "temperature" => ("ChatOptions.Temperature", (double?)options?.Temperature),
                "top_p" => ("ChatOptions.TopP", options?.TopP),
                "top_k" => ("ChatOptions.TopK", options?.TopK),
                "seed" => ("ChatOptions.Seed", options?.Seed is { } seed ? unchecked((int)seed) : null),
                _ => ($"ChatOptions.AdditionalProperties[\"{parameter.Name}\"]", Additional(options, parameter)),
            };
            if (value is not { } v) continue;
            if (!parameter.Contains(v)) throw new ArgumentOutOfRangeException(name, v, parameter.OutOfRangeMessage(name, v));
            sampling = sampling.Set(parameter, v);
        }
        return new GenerationOptions
        {
            MaxNewTokens = options?.MaxOutputTokens ?? model.Options.DefaultMaxOutputTokens,
            StopStrings = options?.StopSequences?.ToList() ?? [],
            Sampling = sampling.Validate(),
        };
    }

    private static double? Additional(ChatOptions? options, SamplingParameter parameter)
    {
        if (options?.AdditionalProperties is not { } extra || !extra.TryGetValue(parameter.Name, out var value) || value is null) return null;
        return value switch
        {
            double d => d, float f => f, int i => i, long l => l, decimal m => (double)m,
            System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.Number } e => e.GetDouble(),
            _ => throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{parameter.Name}\"] must be a number, not {value.GetType().Name}", nameof(options)),
        };
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("onnxdecoder", null, model.ModelId)
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(model) ? model
        : null;

    public void Dispose() { }
}
