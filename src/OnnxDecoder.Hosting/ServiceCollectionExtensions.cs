using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using OnnxDecoder.Runtime;

namespace OnnxDecoder.Hosting;

public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Registers the model (loaded in the background at start), an <see cref="IChatClient"/> over it,
    /// an <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/> when the model folder has the hidden_states
    /// output (export --hidden-states; otherwise GetService returns null), and the "onnxdecoder" health check (tagged
    /// <see cref="OnnxDecoderHealthCheck.ReadyTag"/>). Options come from <paramref name="section"/> (usually
    /// configuration's "OnnxDecoder" section) and are validated when the host starts.
    /// </summary>
    public static IServiceCollection AddOnnxDecoder(this IServiceCollection services, IConfiguration section, Action<OnnxDecoderOptions>? configure = null)
    {
        var options = services.AddOptions<OnnxDecoderOptions>().Bind(section).ValidateDataAnnotations().ValidateOnStart();
        if (configure is not null) options.Configure(configure);
        services.AddSingleton<IValidateOptions<OnnxDecoderOptions>, OnnxDecoderOptionsValidator>();
        services.AddSingleton<OnnxDecoderModel>();
        services.AddHostedService<OnnxDecoderLoader>();
        services.AddMetrics();
        services.AddSingleton<OnnxDecoderMetrics>();
        services.AddHostedService<OnnxDecoderMetricsStarter>();
        services.AddSingleton<IChatClient, OnnxDecoderChatClient>();
        services.AddSingleton<OnnxDecoderEmbeddingGenerator>();
        // Resolves to null (GetService) for a model folder without the hidden_states output.
        services.AddSingleton<IEmbeddingGenerator<string, Embedding<float>>>(provider =>
            EmbeddingRunner.FolderSupports(provider.GetRequiredService<IOptions<OnnxDecoderOptions>>().Value.ModelPath)
                ? provider.GetRequiredService<OnnxDecoderEmbeddingGenerator>() : null!);
        services.AddHealthChecks().AddCheck<OnnxDecoderHealthCheck>(OnnxDecoderHealthCheck.Name, tags: [OnnxDecoderHealthCheck.ReadyTag]);
        return services;
    }
}
