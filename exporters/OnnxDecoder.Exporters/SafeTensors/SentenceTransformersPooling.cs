using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>
/// The pooling a sentence-transformers checkpoint declares in <c>1_Pooling/config.json</c> (Qwen3-Embedding ships
/// one with pooling_mode_lasttoken): one of its pooling_mode_* flags set, read as hostile input (size-capped, typed).
/// </summary>
public static class SentenceTransformersPooling
{
    public const string ConfigPath = "1_Pooling/config.json";
    private const long MaxBytes = 64 << 10;

    /// <summary>The declared pooling, or null when <paramref name="checkpointFolder"/> has no pooling config.</summary>
    public static EmbeddingPooling? Read(string checkpointFolder)
    {
        if (!Directory.Exists(checkpointFolder)) return null;
        string path = Path.Combine(checkpointFolder, "1_Pooling", "config.json");
        if (!File.Exists(path)) return null;
        long size = new FileInfo(path).Length;
        if (size > MaxBytes) throw new ModelFormatException(path, $"is {size} bytes, over the {MaxBytes}-byte limit for a pooling config");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"is not valid JSON ({e.Message}): fix it, or pass --pooling last|mean|cls");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "must be a JSON object");
            var set = new List<string>();
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (!property.Name.StartsWith("pooling_mode_", StringComparison.Ordinal)) continue;
                if (property.Value.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                    throw new ModelFormatException(path, $"{property.Name} must be true or false");
                if (property.Value.ValueKind == JsonValueKind.True) set.Add(property.Name);
            }
            return set switch
            {
                ["pooling_mode_lasttoken"] => EmbeddingPooling.Last,
                ["pooling_mode_mean_tokens"] => EmbeddingPooling.Mean,
                ["pooling_mode_cls_token"] => EmbeddingPooling.Cls,
                [] => throw new ModelFormatException(path, "sets no pooling_mode_*: pass --pooling last|mean|cls"),
                _ => throw new ModelFormatException(path, $"sets {string.Join(", ", set)}; only one of pooling_mode_lasttoken, pooling_mode_mean_tokens, pooling_mode_cls_token is supported: pass --pooling last|mean|cls"),
            };
        }
    }
}
