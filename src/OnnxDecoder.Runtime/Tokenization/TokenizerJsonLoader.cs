using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// Reads a Hugging Face tokenizer.json into a <see cref="HuggingFaceTokenizer"/>. The file is
/// hostile input: size-capped by the caller, JSON depth and component nesting capped, ids
/// range-checked, duplicate vocabulary entries refused, and every component it cannot run (model
/// types other than BPE, BPE dropout, unknown normalizers, pre-tokenizers, post-processors or
/// decoders, regex constructs .NET cannot express) is a one-line error naming the file, the field
/// and the type.
/// </summary>
internal static class TokenizerJsonLoader
{
    public static HuggingFaceTokenizer Load(string path, string? configPath)
    {
        path = System.IO.Path.GetFullPath(path);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"is not valid JSON ({e.Message})", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var modelElement) || modelElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(path, "has no model object");
            var models = new TokenizerJsonModelReader(path);
            var model = models.Model(modelElement);
            var normalizer = new TokenizerJsonNormalizerReader(path).Normalizer(Optional(root, "normalizer"), "normalizer", 0);
            var preTokenizer = new TokenizerJsonPreTokenizerReader(path).PreTokenizer(Optional(root, "pre_tokenizer"), "pre_tokenizer", 0);
            var decoder = new TokenizerJsonDecoderReader(path).Decoder(Optional(root, "decoder"), "decoder", 0);
            var addedTokens = models.AddedTokens(Optional(root, "added_tokens"), model);
            var added = new AddedVocabulary(addedTokens, model, normalizer);
            var postElement = Optional(root, "post_processor");
            var posts = new TokenizerJsonPostProcessorReader(path);
            var postProcessor = postElement is null
                ? posts.FromConfig(configPath, added, model)
                : posts.PostProcessor(postElement.Value, "post_processor", added, model, 0);
            return new HuggingFaceTokenizer(path, model, added, normalizer, preTokenizer, postProcessor, decoder);
        }
    }

    private static JsonElement? Optional(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;
}
