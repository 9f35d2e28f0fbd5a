using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using OnnxDecoder.Hosting;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Runtime.Tokenization.Jinja;
using OnnxDecoder.Runtime.Tools;
using ToolCallDelta = OnnxDecoder.Server.ToolCallDeltaBody;

namespace OnnxDecoder.Server;

/// <summary>
/// The OpenAI-compatible HTTP API over the loaded model: POST /v1/chat/completions and
/// /v1/completions (JSON, or server-sent events when "stream" is true), GET /v1/models and
/// GET /health (liveness) and /health/ready (readiness). Every request is one sequence of the model's continuous batch; a client that
/// disconnects cancels its sequence and frees its row.
/// </summary>
public static partial class OpenAIEndpoints
{
    /// <summary>Request bodies above this size are refused (413 from Kestrel, 400 here when the length is declared).</summary>
    public const long MaxRequestBodyBytes = 4 << 20;
    /// <summary>Seconds a client is asked to wait when the queue is full or the model still loads.</summary>
    public const int RetryAfterSeconds = 1;
    /// <summary>Liveness: 200 while the process answers (the model loading or loaded), 503 once loading failed.</summary>
    public const string HealthPath = "/health";
    /// <summary>Readiness: 200 once the model is loaded and its batcher runs, else 503 saying why (loading, or the load error).</summary>
    public const string ReadyPath = "/health/ready";

    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping, // JSON bodies, never embedded in HTML
    };
    private static readonly byte[] DataPrefix = "data: "u8.ToArray(), EventEnd = "\n\n"u8.ToArray(), Done = "data: [DONE]\n\n"u8.ToArray();

    public static IEndpointRouteBuilder MapOnnxDecoderApi(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapPost("/v1/chat/completions", (HttpContext http) => Complete(http, chat: true));
        endpoints.MapPost("/v1/completions", (HttpContext http) => Complete(http, chat: false));
        endpoints.MapPost("/v1/embeddings", Embed);
        endpoints.MapGet("/v1/models", (HttpContext http) =>
        {
            var model = http.RequestServices.GetRequiredService<OnnxDecoderModel>();
            return model.IsReady
                ? Results.Json(new ModelList("list", [new ModelCard(model.ModelId, "model", Created, "onnxdecoder")]), Json)
                : ErrorResult(NotReady(model));
        });
        // Liveness: every check; Degraded (still loading) answers 200, since the process is up and answering.
        endpoints.MapHealthChecks(HealthPath, new HealthCheckOptions { ResponseWriter = WriteHealth });
        // Readiness: the checks tagged "ready"; 200 only when Healthy, so a probe passes once requests can be served.
        endpoints.MapHealthChecks(ReadyPath, new HealthCheckOptions
        {
            Predicate = check => check.Tags.Contains(OnnxDecoderHealthCheck.ReadyTag),
            ResultStatusCodes =
            {
                [HealthStatus.Healthy] = StatusCodes.Status200OK,
                [HealthStatus.Degraded] = StatusCodes.Status503ServiceUnavailable,
                [HealthStatus.Unhealthy] = StatusCodes.Status503ServiceUnavailable,
            },
            ResponseWriter = WriteHealth,
        });
        return endpoints;
    }

    /// <summary>{"status", "checks": {name: {"status", "description"}}}: the description says why a check is not healthy.</summary>
    private static Task WriteHealth(HttpContext http, HealthReport report) => http.Response.WriteAsJsonAsync(new
    {
        status = report.Status.ToString(),
        checks = report.Entries.ToDictionary(e => e.Key, e => new { status = e.Value.Status.ToString(), description = e.Value.Description }),
    }, Json);

    private static readonly long Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>
    /// Middleware for a server reachable by others: every /v1 request must carry
    /// "Authorization: Bearer KEY" (compared in constant time), else 401 with an OpenAI error object.
    /// /health and /health/ready stay open for probes.
    /// </summary>
    public static Func<HttpContext, RequestDelegate, Task> RequireApiKey(string apiKey)
    {
        byte[] expected = System.Text.Encoding.UTF8.GetBytes("Bearer " + apiKey);
        return async (http, next) =>
        {
            if (http.Request.Path.StartsWithSegments("/v1"))
            {
                byte[] given = System.Text.Encoding.UTF8.GetBytes(http.Request.Headers.Authorization.ToString());
                if (!System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(given, expected))
                {
                    http.Response.Headers.WWWAuthenticate = "Bearer";
                    await WriteError(http, new OpenAIError(401, "a valid API key is required: send \"Authorization: Bearer <key>\"", null, "invalid_api_key")).ConfigureAwait(false);
                    return;
                }
            }
            await next(http).ConfigureAwait(false);
        };
    }

    /// <summary>The prompt through the model's chat template (or hand-written format) with the request's tools, and the
    /// constraint its tool_choice or response_format asks for; a template that refuses the conversation is the client's 400.</summary>
    private static ChatRequestPlan PlanChat(OnnxDecoderModel model, OpenAIRequest request)
    {
        try
        {
            return ChatRequestPlan.Create(model, request.Messages, request.Tools, request.ToolChoice, request.ParallelToolCalls, request.ResponseFormat);
        }
        catch (TemplateError e)
        {
            throw OpenAIError.Invalid($"the model's chat template refused the messages: {e.Message}", "messages");
        }
        catch (ChatRequestException e)
        {
            throw OpenAIError.Invalid(e.Message, e.Field);
        }
    }

    private static async Task Complete(HttpContext http, bool chat)
    {
        var model = http.RequestServices.GetRequiredService<OnnxDecoderModel>();
        var logger = http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("OnnxDecoder.Server");
        var aborted = http.RequestAborted;
        string operation = chat ? "chat" : "text_completion";
        var clock = Stopwatch.StartNew();
        OpenAIRequest request;
        BatchedSequence sequence;
        int[] promptIds;
        ChatRequestPlan? plan = null;
        try
        {
            request = await Read(http, chat).ConfigureAwait(false);
            if (!model.IsReady) throw NotReady(model);
            if (request.Model is { Length: > 0 } name && name != model.ModelId)
                throw new OpenAIError(400, $"the model '{name}' does not exist; this server serves '{model.ModelId}'", "model", "model_not_found");
            if (chat) plan = PlanChat(model, request);
            promptIds = plan is not null ? plan.PromptIds
                : request.PromptIds ?? model.Tokenizer.Encode(request.Prompt ?? "", addBos: true);
            int room = model.MaxLength - promptIds.Length;
            if (room <= 0)
                throw new OpenAIError(400, $"this model's maximum context length is {model.MaxLength} tokens, but the prompt has {promptIds.Length}: shorten it", chat ? "messages" : "prompt", "context_length_exceeded");
            if (request.MaxTokens is { } max && max <= 0)
                throw OpenAIError.Invalid($"'max_tokens' is {max}; it must be at least 1", "max_tokens");
            if (request.MaxTokens > room)
                throw new OpenAIError(400, $"this model's maximum context length is {model.MaxLength} tokens; you requested {promptIds.Length + request.MaxTokens} ({promptIds.Length} in the prompt, {request.MaxTokens} for the output): lower max_tokens to at most {room}", "max_tokens", "context_length_exceeded");
            int maxNew = request.MaxTokens ?? Math.Min(model.SearchDefaults.MaxNewTokens(promptIds.Length, null, chat ? model.Options.DefaultMaxOutputTokens : 16), room);
            var generation = request.ToGeneration(maxNew, model.SamplingDefaults) with { Constraint = plan?.Constraint };
            try
            {
                sequence = await model.SubmitAsync(promptIds, generation, aborted).ConfigureAwait(false);
            }
            catch (ArgumentException e) when (e.ParamName == "options" && generation.Constraint is not null)
            {
                throw OpenAIError.Invalid(e.Message.Split(" (Parameter")[0], "max_tokens");
            }
            catch (QueueFullException e)
            {
                throw new OpenAIError(429, e.Message, null, "queue_full", "rate_limit_error", RetryAfterSeconds);
            }
            catch (ArgumentOutOfRangeException e) when (e.ParamName == "promptIds")
            {
                throw OpenAIError.Invalid(e.Message.Split(" (Parameter")[0], "prompt");
            }
        }
        catch (OpenAIError error)
        {
            Log.Refused(logger, error.Status, error.Message);
            await WriteError(http, error).ConfigureAwait(false);
            return;
        }
        catch (OperationCanceledException) when (aborted.IsCancellationRequested)
        {
            return;
        }

        using var activity = OnnxDecoderTelemetry.StartOperation(operation, model.ModelId, ActivityKind.Server);
        using (sequence)
        {
            string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            try
            {
                GenerationResult result;
                string finish;
                if (request.Stream)
                    (result, finish) = await Stream(http, sequence, plan, id, created, model.ModelId, request.IncludeUsage, promptIds.Length,
                        clock, operation).ConfigureAwait(false);
                else
                {
                    bool first = true;
                    await foreach (var _ in sequence.Tokens.ReadAllAsync(aborted).ConfigureAwait(false))
                        if (first) { first = false; OnnxDecoderTelemetry.RecordFirstToken(model.ModelId, operation, clock.Elapsed.TotalSeconds); }
                    result = await sequence.Completion.ConfigureAwait(false);
                    var usage = Usage.Of(promptIds.Length, sequence, result);
                    var reply = plan?.Parse(result.Text);
                    finish = reply is { Calls.Count: > 0 } ? "tool_calls" : FinishReason(result);
                    object body = chat
                        ? new ChatCompletion(id, "chat.completion", created, model.ModelId, [reply is { Calls.Count: > 0 }
                            ? new ChatChoice(0, new ChatMessageBody("assistant", reply.Content.Length > 0 ? reply.Content : null,
                                [.. reply.Calls.Select(c => new ToolCallBody(ChatRequestPlan.NewCallId(), "function",
                                    new FunctionCallBody(c.Name, c.ArgumentsJson)))]), finish)
                            : new ChatChoice(0, new ChatMessageBody("assistant", result.Text), finish)], usage)
                        : new TextCompletion(id, "text_completion", created, model.ModelId,
                            [new TextChoice(result.Text, 0, null, finish)], usage);
                    await Results.Json(body, Json).ExecuteAsync(http).ConfigureAwait(false);
                }
                OnnxDecoderTelemetry.RecordCompletion(model.ModelId, operation, promptIds.Length, result.TokenIds.Length,
                    clock.Elapsed.TotalSeconds, activity, finish);
                activity?.SetTag("gen_ai.response.id", id);
                Log.Completed(logger, operation, promptIds.Length, result.TokenIds.Length, clock.Elapsed.TotalMilliseconds, result.StopReason.ToString());
            }
            catch (OperationCanceledException) when (aborted.IsCancellationRequested)
            {
                Log.Disconnected(logger, operation);
            }
            catch (Exception e)
            {
                Log.Failed(logger, e, operation);
                var error = new OpenAIError(500, $"generation failed: {e.Message}", type: "server_error");
                if (!http.Response.HasStarted) await WriteError(http, error).ConfigureAwait(false);
                else await WriteEvent(http, error.ToBody(), CancellationToken.None).ConfigureAwait(false); // mid-stream: report in the stream and end it
            }
        }
    }

    /// <returns>The result and the finish reason the stream ended with ("tool_calls" when the reply parsed as calls).</returns>
    private static async Task<(GenerationResult Result, string Finish)> Stream(HttpContext http, BatchedSequence sequence,
        ChatRequestPlan? plan, string id, long created, string modelId, bool includeUsage, int promptTokens, Stopwatch clock, string operation)
    {
        bool chat = plan is not null;
        var aborted = http.RequestAborted;
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no";
        http.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await http.Response.StartAsync(aborted).ConfigureAwait(false);
        if (chat) await WriteEvent(http, ChatChunk(id, created, modelId, new Delta("assistant", ""), null), aborted).ConfigureAwait(false);
        bool first = true;
        var reply = new System.Text.StringBuilder();
        int shown = 0; // characters of the reply streamed as text; the rest may still become a tool call
        var forced = plan?.NewCallStream(); // a forced reply is only calls: they stream as they are written
        var callIds = new List<string>();
        await foreach (var piece in sequence.Tokens.ReadAllAsync(aborted).ConfigureAwait(false))
        {
            if (first) { first = false; OnnxDecoderTelemetry.RecordFirstToken(modelId, operation, clock.Elapsed.TotalSeconds); }
            if (piece.Text.Length == 0) continue;
            if (!chat)
            {
                await WriteEvent(http, new TextCompletionChunk(id, "text_completion", created, modelId, [new TextChoice(piece.Text, 0, null, null)], null), aborted).ConfigureAwait(false);
                continue;
            }
            reply.Append(piece.Text);
            if (forced is not null)
            {
                foreach (var delta in forced.Push(piece.Text))
                {
                    if (delta.Name is not null) callIds.Add(ChatRequestPlan.NewCallId());
                    var body = delta.Name is not null
                        ? new ToolCallDelta(delta.Index, callIds[delta.Index], "function", new FunctionDelta(delta.Name, ""))
                        : new ToolCallDelta(delta.Index, null, null, new FunctionDelta(null, delta.ArgumentsPiece));
                    await WriteEvent(http, ChatChunk(id, created, modelId, new Delta(null, null, [body]), null), aborted).ConfigureAwait(false);
                }
                continue;
            }
            int surelyText = plan!.SurelyText(reply.ToString());
            if (surelyText <= shown) continue;
            await WriteEvent(http, ChatChunk(id, created, modelId, new Delta(null, reply.ToString(shown, surelyText - shown)), null), aborted).ConfigureAwait(false);
            shown = surelyText;
        }
        var result = await sequence.Completion.ConfigureAwait(false);
        string finish = FinishReason(result);
        if (chat)
        {
            var parsed = plan!.Parse(reply.ToString());
            string text = parsed.Calls.Count > 0 ? parsed.Content : reply.ToString();
            if (forced is null && text.Length > shown) await WriteEvent(http, ChatChunk(id, created, modelId, new Delta(null, text[shown..]), null), aborted).ConfigureAwait(false);
            for (int index = forced?.Calls ?? 0; index < parsed.Calls.Count; index++)
                foreach (var delta in ToolCallDeltas(index, parsed.Calls[index]))
                    await WriteEvent(http, ChatChunk(id, created, modelId, new Delta(null, null, [delta]), null), aborted).ConfigureAwait(false);
            if (parsed.Calls.Count > 0) finish = "tool_calls";
        }
        await WriteEvent(http, chat ? ChatChunk(id, created, modelId, new Delta(null, null), finish)
            : new TextCompletionChunk(id, "text_completion", created, modelId, [new TextChoice("", 0, null, finish)], null), aborted).ConfigureAwait(false);
        if (includeUsage)
        {
            var usage = Usage.Of(promptTokens, sequence, result);
            await WriteEvent(http, chat ? new ChatCompletionChunk(id, "chat.completion.chunk", created, modelId, [], usage)
                : new TextCompletionChunk(id, "text_completion", created, modelId, [], usage), aborted).ConfigureAwait(false);
        }
        await http.Response.Body.WriteAsync(Done, aborted).ConfigureAwait(false);
        await http.Response.Body.FlushAsync(aborted).ConfigureAwait(false);
        return (result, finish);
    }

    /// <summary>A call as OpenAI streams it: id, type and name with empty arguments first, then the arguments in pieces.</summary>
    private static IEnumerable<ToolCallDelta> ToolCallDeltas(int index, ToolCall call)
    {
        yield return new ToolCallDelta(index, ChatRequestPlan.NewCallId(), "function", new FunctionDelta(call.Name, ""));
        const int piece = 16;
        for (int at = 0; at < call.ArgumentsJson.Length;)
        {
            int length = Math.Min(piece, call.ArgumentsJson.Length - at);
            if (at + length < call.ArgumentsJson.Length && char.IsHighSurrogate(call.ArgumentsJson[at + length - 1])) length++; // keep a surrogate pair whole
            yield return new ToolCallDelta(index, null, null, new FunctionDelta(null, call.ArgumentsJson.Substring(at, length)));
            at += length;
        }
    }

    private static ChatCompletionChunk ChatChunk(string id, long created, string model, Delta delta, string? finish) =>
        new(id, "chat.completion.chunk", created, model, [new ChunkChoice(0, delta, finish)], null);

    private static async Task WriteEvent(HttpContext http, object payload, CancellationToken cancellationToken)
    {
        var body = http.Response.Body;
        await body.WriteAsync(DataPrefix, cancellationToken).ConfigureAwait(false);
        await JsonSerializer.SerializeAsync(body, payload, payload.GetType(), Json, cancellationToken).ConfigureAwait(false);
        await body.WriteAsync(EventEnd, cancellationToken).ConfigureAwait(false);
        await body.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private static string FinishReason(GenerationResult result) => result.StopReason is StopReason.MaxTokens or StopReason.ContextFull ? "length" : "stop";

    private static async Task<OpenAIRequest> Read(HttpContext http, bool chat)
    {
        if (http.Request.ContentLength > MaxRequestBodyBytes)
            throw OpenAIError.Invalid($"the request body has {http.Request.ContentLength} bytes; at most {MaxRequestBodyBytes} are accepted");
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = MaxRequestBodyBytes;
        if (!(http.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) ?? false))
            throw OpenAIError.Invalid($"the request body must be JSON (Content-Type: application/json), not '{http.Request.ContentType}'");
        try
        {
            using var document = await JsonDocument.ParseAsync(http.Request.Body, new JsonDocumentOptions { MaxDepth = 32 }, http.RequestAborted).ConfigureAwait(false);
            return OpenAIRequest.Parse(document, chat);
        }
        catch (JsonException e)
        {
            throw OpenAIError.Invalid($"the request body is not valid JSON: {e.Message}");
        }
        catch (BadHttpRequestException e)
        {
            throw new OpenAIError(e.StatusCode, $"the request body could not be read: {e.Message}");
        }
    }

    private static OpenAIError NotReady(OnnxDecoderModel model) => model.LoadError is { } error
        ? new OpenAIError(503, $"the model failed to load: {error.Message}", null, "model_load_failed", "server_error")
        : new OpenAIError(503, "the model is still loading: retry shortly", null, "model_loading", "server_error", RetryAfterSeconds);

    private static IResult ErrorResult(OpenAIError error) => Results.Json(error.ToBody(), Json, statusCode: error.Status);

    private static async Task WriteError(HttpContext http, OpenAIError error)
    {
        if (http.Response.HasStarted) return;
        if (error.RetryAfterSeconds is { } seconds) http.Response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await ErrorResult(error).ExecuteAsync(http).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Refused with {Status}: {Reason}")]
        public static partial void Refused(ILogger logger, int status, string reason);

        [LoggerMessage(EventId = 102, Level = LogLevel.Debug, Message = "{Operation}: {InputTokens} -> {OutputTokens} tokens in {Milliseconds:F0} ms, stop: {StopReason}")]
        public static partial void Completed(ILogger logger, string operation, int inputTokens, int outputTokens, double milliseconds, string stopReason);

        [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "{Operation}: the client disconnected; its sequence was cancelled")]
        public static partial void Disconnected(ILogger logger, string operation);

        [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "{Operation} failed")]
        public static partial void Failed(ILogger logger, Exception exception, string operation);
    }
}

internal sealed record ModelList(string Object, IReadOnlyList<ModelCard> Data);
internal sealed record ModelCard(string Id, string Object, long Created, [property: JsonPropertyName("owned_by")] string OwnedBy);
internal sealed record Usage([property: JsonPropertyName("prompt_tokens")] int PromptTokens, [property: JsonPropertyName("completion_tokens")] int CompletionTokens,
    [property: JsonPropertyName("total_tokens")] int TotalTokens, [property: JsonPropertyName("prompt_tokens_details")] PromptTokensDetails PromptTokensDetails)
{
    /// <summary>The usage of one finished sequence: cached tokens are the prompt tokens the batcher did not run again.</summary>
    public static Usage Of(int promptTokens, BatchedSequence sequence, GenerationResult result) =>
        new(promptTokens, result.TokenIds.Length, promptTokens + result.TokenIds.Length, new PromptTokensDetails(sequence.CachedPromptTokens));
}
internal sealed record PromptTokensDetails([property: JsonPropertyName("cached_tokens")] int CachedTokens);
internal sealed record ChatMessageBody(string Role, string? Content,
    [property: JsonPropertyName("tool_calls"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<ToolCallBody>? ToolCalls = null);
internal sealed record ToolCallBody(string Id, string Type, FunctionCallBody Function);
internal sealed record FunctionCallBody(string Name, string Arguments);
internal sealed record ToolCallDeltaBody(int Index, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Id,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Type, FunctionDelta Function);
internal sealed record FunctionDelta([property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Name,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Arguments);
internal sealed record ChatChoice(int Index, ChatMessageBody Message, [property: JsonPropertyName("finish_reason")] string FinishReason);
internal sealed record ChatCompletion(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChoice> Choices, Usage Usage);
internal sealed record Delta([property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Role, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Content,
    [property: JsonPropertyName("tool_calls"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<ToolCallDeltaBody>? ToolCalls = null);
internal sealed record ChunkChoice(int Index, Delta Delta, [property: JsonPropertyName("finish_reason")] string? FinishReason);
internal sealed record ChatCompletionChunk(string Id, string Object, long Created, string Model, IReadOnlyList<ChunkChoice> Choices, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Usage? Usage);
internal sealed record TextChoice(string Text, int Index, object? Logprobs, [property: JsonPropertyName("finish_reason")] string? FinishReason);
internal sealed record TextCompletion(string Id, string Object, long Created, string Model, IReadOnlyList<TextChoice> Choices, Usage Usage);
internal sealed record TextCompletionChunk(string Id, string Object, long Created, string Model, IReadOnlyList<TextChoice> Choices, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Usage? Usage);
