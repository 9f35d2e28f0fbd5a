using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OnnxDecoder.Hosting;

namespace OnnxDecoder.Server;

/// <summary>
/// POST /v1/embeddings in OpenAI's shape: "input" is a string, an array of strings, an array of token ids or an
/// array of such arrays; "encoding_format" float (default) or base64 (little-endian float32 bytes); the inputs of
/// one request run in left-padded batches (<see cref="Runtime.EmbeddingRunner"/>). Needs a model exported with
/// --hidden-states; errors are OpenAI error objects as on the other endpoints.
/// </summary>
public static partial class OpenAIEndpoints
{
    /// <summary>Inputs one request may hold (OpenAI's own limit).</summary>
    public const int MaxEmbeddingInputs = 2048;

    private static async Task Embed(HttpContext http)
    {
        var model = http.RequestServices.GetRequiredService<OnnxDecoderModel>();
        var logger = http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("OnnxDecoder.Server");
        var aborted = http.RequestAborted;
        try
        {
            var request = await ReadEmbeddingRequest(http).ConfigureAwait(false);
            if (!model.IsReady) throw NotReady(model);
            if (request.Model is { Length: > 0 } name && name != model.ModelId)
                throw new OpenAIError(400, $"the model '{name}' does not exist; this server serves '{model.ModelId}'", "model", "model_not_found");
            if (model.Embeddings is not { } runner)
                throw new OpenAIError(400, $"the model '{model.ModelId}' serves no embeddings: export it with `onnx-decoder export --hidden-states`", "model", "model_not_supported");
            if (request.Dimensions is { } dimensions && dimensions != runner.Dimensions)
                throw OpenAIError.Invalid($"'dimensions' is {dimensions}; this model's embeddings have {runner.Dimensions} (leave it out)", "dimensions");

            var ids = new List<IReadOnlyList<int>>(request.Texts?.Count ?? request.TokenIds!.Count);
            if (request.Texts is { } texts)
                foreach (var text in texts) ids.Add(model.Tokenizer.EncodeText(text, addSpecialTokens: true));
            else ids.AddRange(request.TokenIds!);
            for (int i = 0; i < ids.Count; i++)
            {
                if (ids[i].Count == 0) throw OpenAIError.Invalid($"input {i} has no tokens: send non-empty input", "input");
                if (ids[i].Count > runner.Folder.ContextLength)
                    throw new OpenAIError(400, $"input {i} has {ids[i].Count} tokens; this model's maximum context length is {runner.Folder.ContextLength}: shorten it", "input", "context_length_exceeded");
                foreach (int id in ids[i])
                    if (id < 0 || id >= runner.Folder.VocabSize)
                        throw OpenAIError.Invalid($"input {i}: token id {id} is outside the vocabulary (0..{runner.Folder.VocabSize - 1})", "input");
            }

            var generator = http.RequestServices.GetRequiredService<OnnxDecoderEmbeddingGenerator>();
            var generated = await generator.GenerateFromTokensAsync(ids, null, aborted).ConfigureAwait(false);
            var data = new List<EmbeddingData>(generated.Count);
            for (int i = 0; i < generated.Count; i++)
            {
                var vector = generated[i].Vector;
                object encoded = request.Base64 ? Convert.ToBase64String(MemoryMarshal.AsBytes(vector.Span)) : vector.ToArray();
                data.Add(new EmbeddingData("embedding", i, encoded));
            }
            int tokens = ids.Sum(i => i.Count);
            await Results.Json(new EmbeddingList("list", data, model.ModelId, new EmbeddingUsage(tokens, tokens)), Json).ExecuteAsync(http).ConfigureAwait(false);
        }
        catch (OpenAIError error)
        {
            Log.Refused(logger, error.Status, error.Message);
            await WriteError(http, error).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (aborted.IsCancellationRequested)
        {
            Log.Disconnected(logger, "embeddings");
        }
        catch (Exception e)
        {
            Log.Failed(logger, e, "embeddings");
            await WriteError(http, new OpenAIError(500, $"embedding failed: {e.Message}", type: "server_error")).ConfigureAwait(false);
        }
    }

    private sealed record EmbeddingRequest(string? Model, IReadOnlyList<string>? Texts, IReadOnlyList<IReadOnlyList<int>>? TokenIds, bool Base64, int? Dimensions);

    /// <summary>The request body, read field by field from untrusted JSON; each wrong shape is a 400 naming the field.</summary>
    private static async Task<EmbeddingRequest> ReadEmbeddingRequest(HttpContext http)
    {
        if (http.Request.ContentLength > MaxRequestBodyBytes)
            throw OpenAIError.Invalid($"the request body has {http.Request.ContentLength} bytes; at most {MaxRequestBodyBytes} are accepted");
        if (http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = MaxRequestBodyBytes;
        if (!(http.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) ?? false))
            throw OpenAIError.Invalid($"the request body must be JSON (Content-Type: application/json), not '{http.Request.ContentType}'");
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(http.Request.Body, new JsonDocumentOptions { MaxDepth = 32 }, http.RequestAborted).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            throw OpenAIError.Invalid($"the request body is not valid JSON: {e.Message}");
        }
        catch (BadHttpRequestException e)
        {
            throw new OpenAIError(e.StatusCode, $"the request body could not be read: {e.Message}");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw OpenAIError.Invalid("the request body must be a JSON object");
            string? model = root.TryGetProperty("model", out var m) && m.ValueKind != JsonValueKind.Null
                ? m.ValueKind == JsonValueKind.String ? m.GetString() : throw OpenAIError.Invalid("'model' must be a string", "model")
                : null;
            bool base64 = (root.TryGetProperty("encoding_format", out var f) && f.ValueKind != JsonValueKind.Null ? f.ValueKind == JsonValueKind.String ? f.GetString() : null : "float") switch
            {
                "float" => false,
                "base64" => true,
                _ => throw OpenAIError.Invalid("'encoding_format' must be \"float\" or \"base64\"", "encoding_format"),
            };
            int? dimensions = null;
            if (root.TryGetProperty("dimensions", out var d) && d.ValueKind != JsonValueKind.Null)
                dimensions = d.ValueKind == JsonValueKind.Number && d.TryGetInt32(out int value) && value > 0 ? value : throw OpenAIError.Invalid("'dimensions' must be a positive whole number", "dimensions");
            if (!root.TryGetProperty("input", out var input) || input.ValueKind == JsonValueKind.Null)
                throw OpenAIError.Invalid("'input' is required: a string, an array of strings, or token ids", "input");
            var (texts, tokenIds) = ReadEmbeddingInput(input);
            return new EmbeddingRequest(model, texts, tokenIds, base64, dimensions);
        }
    }

    private static (IReadOnlyList<string>? Texts, IReadOnlyList<IReadOnlyList<int>>? TokenIds) ReadEmbeddingInput(JsonElement input)
    {
        const string Shape = "'input' must be a string, an array of strings, an array of token ids, or an array of arrays of token ids";
        if (input.ValueKind == JsonValueKind.String)
            return (input.GetString() is { Length: > 0 } one ? [one] : throw OpenAIError.Invalid("'input' is an empty string: send non-empty text", "input"), null);
        if (input.ValueKind != JsonValueKind.Array) throw OpenAIError.Invalid(Shape, "input");
        int count = input.GetArrayLength();
        if (count == 0) throw OpenAIError.Invalid("'input' is an empty array: send at least one input", "input");
        var first = input[0].ValueKind;
        if (first == JsonValueKind.Number) return (null, [TokenIds(input, "input")]);
        if (count > MaxEmbeddingInputs) throw OpenAIError.Invalid($"'input' has {count} entries; at most {MaxEmbeddingInputs} are accepted per request", "input");
        if (first == JsonValueKind.String)
        {
            var texts = new List<string>(count);
            foreach (var item in input.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.String) throw OpenAIError.Invalid(Shape + ", not a mix", "input");
                texts.Add(item.GetString() is { Length: > 0 } text ? text : throw OpenAIError.Invalid($"input {texts.Count} is an empty string: send non-empty text", "input"));
            }
            return (texts, null);
        }
        if (first == JsonValueKind.Array)
        {
            var lists = new List<IReadOnlyList<int>>(count);
            foreach (var item in input.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Array) throw OpenAIError.Invalid(Shape + ", not a mix", "input");
                lists.Add(TokenIds(item, $"input[{lists.Count}]"));
            }
            return (null, lists);
        }
        throw OpenAIError.Invalid(Shape, "input");
    }

    private static int[] TokenIds(JsonElement array, string where)
    {
        var ids = new int[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
            ids[i++] = item.ValueKind == JsonValueKind.Number && item.TryGetInt32(out int id) && id >= 0 ? id
                : throw OpenAIError.Invalid($"{where} entry {item.GetRawText()} must be a non-negative whole number (a token id)", "input");
        if (ids.Length == 0) throw OpenAIError.Invalid($"{where} has no token ids: send at least one", "input");
        return ids;
    }
}

internal sealed record EmbeddingData(string Object, int Index, object Embedding);
internal sealed record EmbeddingUsage([property: JsonPropertyName("prompt_tokens")] int PromptTokens, [property: JsonPropertyName("total_tokens")] int TotalTokens);
internal sealed record EmbeddingList(string Object, IReadOnlyList<EmbeddingData> Data, string Model, EmbeddingUsage Usage);
