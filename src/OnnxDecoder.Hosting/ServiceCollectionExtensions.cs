using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace OnnxDecoder.Hosting;

public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Registers the model (loaded in the background at start), an <see cref="IChatClient"/> over it,
    /// and the "onnxdecoder" health check. Options come from <paramref name="section"/> (usually
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
        services.AddHealthChecks().AddCheck<OnnxDecoderHealthCheck>("onnxdecoder");
        return services;
    }
}
