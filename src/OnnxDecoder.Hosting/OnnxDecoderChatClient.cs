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

    private GenerationOptions Map(ChatOptions? options) => new()
    {
        MaxNewTokens = options?.MaxOutputTokens ?? model.Options.DefaultMaxOutputTokens,
        StopStrings = options?.StopSequences?.ToList() ?? [],
        Sampling = new SamplingOptions
        {
            Temperature = options?.Temperature ?? model.Options.DefaultTemperature,
            TopP = options?.TopP ?? 1,
            TopK = options?.TopK ?? 0,
            Seed = options?.Seed is { } seed ? unchecked((int)seed) : null,
        }.Validate(),
    };

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("onnxdecoder", null, model.ModelId)
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(model) ? model
        : null;

    public void Dispose() { }
}
