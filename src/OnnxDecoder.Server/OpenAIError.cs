using System.Text.Json.Serialization;

namespace OnnxDecoder.Server;

/// <summary>
/// A request the server refuses, answered as an OpenAI-style error object:
/// <c>{"error": {"message", "type", "param", "code"}}</c> with the HTTP status and, for 429/503,
/// a Retry-After header.
/// </summary>
public sealed class OpenAIError(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error", int? retryAfterSeconds = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type;
    public int? RetryAfterSeconds { get; } = retryAfterSeconds;

    public static OpenAIError Invalid(string message, string? param = null, string? code = null) => new(400, message, param, code);

    internal ErrorEnvelope ToBody() => new(new ErrorBody(Message, Type, Param, Code));
}

internal sealed record ErrorBody(
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("param")] string? Param,
    [property: JsonPropertyName("code")] string? Code);

internal sealed record ErrorEnvelope([property: JsonPropertyName("error")] ErrorBody Error);
