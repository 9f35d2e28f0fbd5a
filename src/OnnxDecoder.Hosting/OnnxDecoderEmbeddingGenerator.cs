using Microsoft.Extensions.AI;
using OnnxDecoder.Runtime;

namespace OnnxDecoder.Hosting;

/// <summary>
/// Microsoft.Extensions.AI's IEmbeddingGenerator over a model exported with <c>--hidden-states</c>: each text
/// is tokenized as Hugging Face's tokenizer(text) does (special tokens of tokenizer.json's post-processor
/// included), and the texts run through <see cref="EmbeddingRunner"/> in left-padded batches, pooled and
/// L2-normalised as the model's metadata says. AddOnnxDecoder registers it only for such model folders.
/// </summary>
public sealed class OnnxDecoderEmbeddingGenerator(OnnxDecoderModel model) : IEmbeddingGenerator<string, Embedding<float>>
{
    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        var texts = values.ToList();
        await model.WaitUntilLoadedAsync(cancellationToken).ConfigureAwait(false);
        var ids = new List<IReadOnlyList<int>>(texts.Count);
        for (int i = 0; i < texts.Count; i++)
        {
            var tokens = model.Tokenizer.EncodeText(texts[i] ?? throw new ArgumentException($"input {i} is null", nameof(values)), addSpecialTokens: true);
            if (tokens.Length == 0) throw new ArgumentException($"input {i} is empty and the tokenizer adds no special tokens: embed a non-empty text", nameof(values));
            ids.Add(tokens);
        }
        return await GenerateFromTokensAsync(ids, options, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Embeddings of token id sequences (the OpenAI endpoint's token-id inputs).</summary>
    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateFromTokensAsync(IReadOnlyList<IReadOnlyList<int>> tokenIds, EmbeddingGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        await model.WaitUntilLoadedAsync(cancellationToken).ConfigureAwait(false);
        var runner = Runner();
        if (options?.Dimensions is { } dimensions && dimensions != runner.Dimensions)
            throw new ArgumentException($"dimensions {dimensions} is not served: this model's embeddings have {runner.Dimensions} dimensions (leave dimensions out)", nameof(options));
        var vectors = await Task.Run(() => runner.Embed(tokenIds, cancellationToken), cancellationToken).ConfigureAwait(false);
        var created = DateTimeOffset.UtcNow;
        long tokens = tokenIds.Sum(t => (long)t.Count);
        return new GeneratedEmbeddings<Embedding<float>>(vectors.Select(v => new Embedding<float>(v) { ModelId = model.ModelId, CreatedAt = created }))
        {
            Usage = new UsageDetails { InputTokenCount = tokens, TotalTokenCount = tokens },
        };
    }

    private EmbeddingRunner Runner() => model.Embeddings
        ?? throw new NotSupportedException($"{model.Options.ModelPath} has no hidden_states output: export it with `onnx-decoder export --hidden-states` to serve embeddings");

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(EmbeddingGeneratorMetadata) ? new EmbeddingGeneratorMetadata("onnxdecoder", null, model.ModelId, model.Embeddings?.Dimensions)
        : serviceType.IsInstanceOfType(this) ? this
        : null;

    public void Dispose()
    {
        // The model is the container's singleton and is disposed with it.
    }
}
