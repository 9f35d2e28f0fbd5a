using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;
using AIChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace OnnxDecoder.Hosting;

/// <summary>
/// Microsoft.Extensions.AI's IChatClient over the loaded model: the conversation is rendered in the
/// family's chat format, ChatOptions map onto sampling (temperature, top-p, top-k, max output tokens,
/// stop sequences, seed), usage is reported, and each request takes a row of the model's continuous batch.
/// Tools map as the OpenAI server maps them (<see cref="ChatRequestPlan"/>): ChatOptions.Tools' function
/// declarations are the tools, ToolMode is tool_choice (RequireAny / RequireSpecific force a call through the
/// grammar), AllowMultipleToolCalls is parallel_tool_calls, ResponseFormat Json (with or without a schema) is
/// response_format; calls come back as FunctionCallContent and FunctionResultContent goes back as tool messages,
/// so the client works under UseFunctionInvocation().
/// </summary>
public sealed class OnnxDecoderChatClient(OnnxDecoderModel model, ILogger<OnnxDecoderChatClient> logger) : IChatClient
{
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<AIChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        var calls = new List<AIContent>();
        ChatResponseUpdate? last = null;
        UsageDetails? usage = null;
        await foreach (var update in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(update.Text);
            calls.AddRange(update.Contents.OfType<FunctionCallContent>());
            last = update;
            usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
        }
        List<AIContent> contents = text.Length > 0 ? [new TextContent(text.ToString()), .. calls] : calls.Count > 0 ? calls : [new TextContent("")];
        return new ChatResponse(new AIChatMessage(ChatRole.Assistant, contents))
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
        var conversation = Conversation(messages, options);
        await model.WaitUntilLoadedAsync(cancellationToken).ConfigureAwait(false);
        var plan = ChatRequestPlan.Create(model, conversation, Tools(options), ToolChoiceOf(options), options?.AllowMultipleToolCalls ?? true,
            ResponseFormatOf(options));
        var promptIds = plan.PromptIds;
        var generation = Map(options) with { Constraint = plan.Constraint };
        string responseId = Guid.NewGuid().ToString("N");
        ChatResponseUpdate Update(string text) =>
            new(ChatRole.Assistant, text) { ResponseId = responseId, ModelId = model.ModelId, CreatedAt = DateTimeOffset.UtcNow };

        using var activity = OnnxDecoderTelemetry.StartOperation("chat", model.ModelId, ActivityKind.Internal);
        activity?.SetTag("gen_ai.request.max_tokens", generation.MaxNewTokens);
        activity?.SetTag("gen_ai.request.temperature", generation.Sampling.Temperature);
        var clock = Stopwatch.StartNew();
        bool first = true;
        var reply = new System.Text.StringBuilder();
        int shown = 0; // characters streamed as text; the rest may still become a tool call
        using var sequence = await model.SubmitAsync(promptIds, generation, cancellationToken, Speculates(options)).ConfigureAwait(false);
        await foreach (var token in sequence.Tokens.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            if (first)
            {
                OnnxDecoderTelemetry.RecordFirstToken(model.ModelId, "chat", clock.Elapsed.TotalSeconds);
                first = false;
            }
            if (token.Text.Length == 0) continue;
            reply.Append(token.Text);
            int surelyText = plan.SurelyText(reply.ToString());
            if (surelyText <= shown) continue;
            yield return Update(reply.ToString(shown, surelyText - shown));
            shown = surelyText;
        }
        var result = await sequence.Completion.ConfigureAwait(false);

        var parsed = plan.Parse(reply.ToString());
        string text = parsed.Calls.Count > 0 ? parsed.Content : reply.ToString();
        if (text.Length > shown)
            yield return Update(text[shown..]);
        if (parsed.Calls.Count > 0)
            yield return new ChatResponseUpdate(ChatRole.Assistant,
                [.. parsed.Calls.Select(c => (AIContent)new FunctionCallContent(ChatRequestPlan.NewCallId(), c.Name, Arguments(c.ArgumentsJson)))])
            {
                ResponseId = responseId, ModelId = model.ModelId, CreatedAt = DateTimeOffset.UtcNow,
            };
        var finish = parsed.Calls.Count > 0 ? ChatFinishReason.ToolCalls
            : result.StopReason is StopReason.MaxTokens or StopReason.ContextFull ? ChatFinishReason.Length : ChatFinishReason.Stop;
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

    /// <summary>The messages in OpenAI's shape: function calls become an assistant's tool_calls, function results tool messages.</summary>
    private static JsonArray Conversation(IEnumerable<AIChatMessage> messages, ChatOptions? options)
    {
        var conversation = new JsonArray();
        if (options?.Instructions is { Length: > 0 } instructions) conversation.Add(new JsonObject { ["role"] = "system", ["content"] = instructions });
        foreach (var message in messages)
        {
            var results = message.Contents.OfType<FunctionResultContent>().ToList();
            foreach (var result in results)
                conversation.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = result.CallId, ["content"] = ResultText(result.Result) });
            if (results.Count > 0 && message.Text.Length == 0) continue;
            string role = message.Role == ChatRole.System ? "system" : message.Role == ChatRole.Assistant ? "assistant" : "user";
            var item = new JsonObject { ["role"] = role, ["content"] = message.Text };
            var calls = message.Contents.OfType<FunctionCallContent>().ToList();
            if (role == "assistant" && calls.Count > 0)
                item["tool_calls"] = new JsonArray([.. calls.Select(c => (JsonNode)new JsonObject
                {
                    ["id"] = c.CallId,
                    ["type"] = "function",
                    ["function"] = new JsonObject
                    {
                        ["name"] = c.Name,
                        ["arguments"] = c.Arguments is null ? new JsonObject() : JsonSerializer.SerializeToNode(c.Arguments, AIJsonUtilities.DefaultOptions),
                    },
                })]);
            conversation.Add(item);
        }
        return conversation;
    }

    private static string ResultText(object? result) => result switch
    {
        null => "",
        string text => text,
        JsonElement { ValueKind: JsonValueKind.String } text => text.GetString()!,
        _ => JsonSerializer.Serialize(result, AIJsonUtilities.DefaultOptions),
    };

    /// <summary>ChatOptions.Tools' function declarations as an OpenAI tools list (other tool kinds are not served here).</summary>
    private static JsonArray? Tools(ChatOptions? options)
    {
        var functions = options?.Tools?.OfType<AIFunctionDeclaration>().ToList();
        if (functions is not { Count: > 0 }) return null;
        return new JsonArray([.. functions.Select(f => (JsonNode)new JsonObject
        {
            ["type"] = "function",
            ["function"] = new JsonObject
            {
                ["name"] = f.Name,
                ["description"] = f.Description,
                ["parameters"] = JsonNode.Parse(f.JsonSchema.GetRawText()),
            },
        })]);
    }

    private static ToolChoice ToolChoiceOf(ChatOptions? options) => options?.ToolMode switch
    {
        NoneChatToolMode => new ToolChoice(ToolChoiceMode.None),
        RequiredChatToolMode { RequiredFunctionName: { } name } => new ToolChoice(ToolChoiceMode.Function, name),
        RequiredChatToolMode => new ToolChoice(ToolChoiceMode.Required),
        _ => ToolChoice.Auto,
    };

    private static ResponseFormatRequest? ResponseFormatOf(ChatOptions? options) => options?.ResponseFormat switch
    {
        ChatResponseFormatJson { Schema: { } schema } => new ResponseFormatRequest(ResponseFormatKind.JsonSchema, schema.GetRawText(), Strict: true),
        ChatResponseFormatJson => new ResponseFormatRequest(ResponseFormatKind.JsonObject),
        _ => null,
    };

    private static Dictionary<string, object?> Arguments(string json) =>
        JsonSerializer.Deserialize<Dictionary<string, object?>>(json, AIJsonUtilities.DefaultOptions) ?? [];

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

    /// <summary>ChatOptions.AdditionalProperties["speculative"] = false turns the model's speculative decoding off for
    /// this call (it changes the speed only: greedy output is the same either way).</summary>
    private static bool Speculates(ChatOptions? options)
    {
        if (options?.AdditionalProperties is not { } extra || !extra.TryGetValue("speculative", out var value) || value is null) return true;
        return value switch
        {
            bool b => b,
            System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False } e => e.GetBoolean(),
            _ => throw new ArgumentException($"ChatOptions.AdditionalProperties[\"speculative\"] must be true or false, not {value.GetType().Name}", nameof(options)),
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
