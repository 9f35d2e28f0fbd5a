using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;

namespace OnnxDecoder.Hosting;

/// <summary>The "OnnxDecoder" configuration section.</summary>
public sealed class OnnxDecoderOptions
{
    public const string Section = "OnnxDecoder";

    /// <summary>Model folder written by `onnx-decoder export`.</summary>
    [Required]
    public string ModelPath { get; set; } = "";

    /// <summary>Execution providers in order of preference: cpu, cuda, dml.</summary>
    [MinLength(1)]
    public List<string> ExecutionProviders { get; set; } = ["cpu"];

    /// <summary>On the CPU provider, our kernels, libonnxdecoder_kernels.so, where the build shipped it: fused ops in place of
    /// the qkv Split and rotary and the gate/up Split and SiLU; false: the graph as exported on ONNX Runtime's kernels.</summary>
    public bool NativeKernels { get; set; } = true;

    /// <summary>With NativeKernels, int4/int8 MatMulNBits (accuracy level 4, block 32, symmetric) on our matmul kernel too;
    /// off by default (measured at parity with ONNX Runtime's, see ExecutionProviderOptions.NativeMatMul).</summary>
    public bool NativeMatMul { get; set; }

    /// <summary>Sequences decoded together in one batched run (each with its own KV cache row).</summary>
    [Range(1, 1024)]
    public int MaxConcurrentSequences { get; set; } = 4;

    /// <summary>Requests that may wait for a free sequence before new ones are refused.</summary>
    [Range(0, 100_000)]
    public int MaxQueueLength { get; set; } = 64;

    /// <summary>KV cache length per sequence (default: the model's context).</summary>
    [Range(1, 1 << 24)]
    public int? MaxLength { get; set; }

    /// <summary>Refuse to load when the KV caches (every sequence row at MaxLength, plus the prefill
    /// row) would exceed this many MiB; lower MaxConcurrentSequences or MaxLength to fit.</summary>
    [Range(1, 1 << 30)]
    public long? MaxKvCacheMiB { get; set; }

    /// <summary>Prefill a new prompt in chunks of this many tokens, with decode steps of the running
    /// sequences between chunks (0: whole prompts; long prompts then pause the others).</summary>
    [Range(0, 1 << 20)]
    public int PrefillChunk { get; set; }

    [Range(1, 1 << 20)]
    public int DefaultMaxOutputTokens { get; set; } = 256;

    /// <summary>Speculative decoding for every unconstrained request: "ngram" (prompt lookup) or the folder of a draft
    /// model (a smaller export with the same tokenizer); null: off. Needs an ort-lowering export with logits for
    /// every position. A chat call turns it off with ChatOptions.AdditionalProperties["speculative"] = false.</summary>
    public string? Speculative { get; set; }

    /// <summary>Tokens drafted per sequence and step at most (k), with <see cref="Speculative"/>.</summary>
    [Range(1, 64)]
    public int DraftTokens { get; set; } = 3;

    /// <summary>Temperature when a request gives none; null: the model folder's (genai_config.json search), else greedy.</summary>
    [Range(0.0, 2.0)]
    public float? DefaultTemperature { get; set; }
}

/// <summary>Checks what DataAnnotations cannot: the model folder exists and the providers are known.</summary>
internal sealed class OnnxDecoderOptionsValidator : IValidateOptions<OnnxDecoderOptions>
{
    public ValidateOptionsResult Validate(string? name, OnnxDecoderOptions options)
    {
        var failures = new List<string>();
        if (!string.IsNullOrWhiteSpace(options.ModelPath) && !File.Exists(Path.Combine(options.ModelPath, "genai_config.json")))
            failures.Add($"OnnxDecoder:ModelPath '{options.ModelPath}' is not a model folder (no genai_config.json): export one with `onnx-decoder export`");
        if (options.Speculative is { } speculative && speculative != "ngram" && !File.Exists(Path.Combine(speculative, "genai_config.json")))
            failures.Add($"OnnxDecoder:Speculative '{speculative}' is neither 'ngram' nor a model folder (no genai_config.json): give ngram, or the folder of a smaller export with the same tokenizer");
        foreach (var provider in options.ExecutionProviders)
            if (provider.Trim().ToLowerInvariant() is not ("cpu" or "cuda" or "dml" or "directml"))
                failures.Add($"OnnxDecoder:ExecutionProviders '{provider}' is not known: use cpu, cuda or dml");
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
