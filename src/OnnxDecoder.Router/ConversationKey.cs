using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace OnnxDecoder.Router;

/// <summary>
/// The key that keeps one conversation on one replica: the session header when the client sends
/// one, else a hash of what every turn of the conversation starts with: for chat, the messages up
/// to and including the first user message (system prompt and opening question); for a text
/// completion, the first characters of the prompt (a follow-up prompt extends the previous one).
/// </summary>
public static class ConversationKey
{
    /// <summary>A client that names its conversation sends it in this header; it wins over the body.</summary>
    public const string SessionHeader = "X-Session-Id";
    /// <summary>Request bodies above this size are not read for a key (the replica refuses them anyway).</summary>
    public const long MaxBodyBytes = 4 << 20;
    /// <summary>Characters (or token ids) of a completion prompt that make its key.</summary>
    public const int PromptPrefix = 256;
    private const string ItemKey = "OnnxDecoder.Router.ConversationKey";

    /// <summary>The key stored by <see cref="Capture"/>, or null (no body, not JSON, no messages).</summary>
    public static ulong? Of(HttpContext http) => http.Items.TryGetValue(ItemKey, out var key) ? (ulong?)key : null;

    /// <summary>Buffers the request body (so it can be sent again on a retry) and stores its key.</summary>
    public static async Task Capture(HttpContext http)
    {
        if (http.Request.Headers[SessionHeader] is { Count: > 0 } session && session.ToString() is { Length: > 0 } id)
        {
            http.Items[ItemKey] = Hash(Encoding.UTF8.GetBytes("session\0" + id));
            return;
        }
        if (!HttpMethods.IsPost(http.Request.Method) || http.Request.ContentLength is > MaxBodyBytes) return;
        if (!(http.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) ?? false)) return;
        try
        {
            using var document = await JsonDocument.ParseAsync(http.Request.Body, new JsonDocumentOptions { MaxDepth = 32 }, http.RequestAborted).ConfigureAwait(false);
            if (FromBody(document.RootElement) is { } key) http.Items[ItemKey] = key;
        }
        catch (JsonException)
        {
            // Not JSON: the replica answers with the error; any replica will do.
        }
        finally
        {
            http.Request.Body.Position = 0;
        }
    }

    /// <summary>The key of a chat or completion request body, or null when it has neither messages nor prompt.</summary>
    public static ulong? FromBody(JsonElement body)
    {
        if (body.ValueKind != JsonValueKind.Object) return null;
        var text = new StringBuilder();
        if (body.TryGetProperty("messages", out var messages) && messages.ValueKind == JsonValueKind.Array)
        {
            foreach (var message in messages.EnumerateArray())
            {
                if (message.ValueKind != JsonValueKind.Object) return null;
                string role = message.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : "";
                string content = message.TryGetProperty("content", out var c) ? (c.ValueKind == JsonValueKind.String ? c.GetString()! : c.GetRawText()) : "";
                text.Append(role).Append('\0').Append(content).Append('\0');
                if (role == "user") break;
            }
            return text.Length == 0 ? null : Hash(Encoding.UTF8.GetBytes("chat\0" + text));
        }
        if (body.TryGetProperty("prompt", out var prompt))
        {
            if (prompt.ValueKind == JsonValueKind.String)
            {
                string value = prompt.GetString()!;
                return Hash(Encoding.UTF8.GetBytes("prompt\0" + value[..Math.Min(value.Length, PromptPrefix)]));
            }
            if (prompt.ValueKind == JsonValueKind.Array)
            {
                foreach (var id in prompt.EnumerateArray().Take(PromptPrefix)) text.Append(id.GetRawText()).Append(',');
                return Hash(Encoding.UTF8.GetBytes("ids\0" + text));
            }
        }
        return null;
    }

    private static ulong Hash(ReadOnlySpan<byte> bytes) => BinaryPrimitives.ReadUInt64LittleEndian(SHA256.HashData(bytes));

    /// <summary>Rendezvous (highest random weight) score of a key on a destination: the destination
    /// with the highest score takes the key, so when one leaves only its own keys move.</summary>
    public static ulong Score(ulong key, string destination)
    {
        Span<byte> bytes = stackalloc byte[8 + Encoding.UTF8.GetMaxByteCount(destination.Length)];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, key);
        int length = 8 + Encoding.UTF8.GetBytes(destination, bytes[8..]);
        return Hash(bytes[..length]);
    }
}
