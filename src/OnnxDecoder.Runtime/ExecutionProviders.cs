using Microsoft.ML.OnnxRuntime;

namespace OnnxDecoder.Runtime;

public enum ExecutionProvider { Cpu, Cuda, DirectML }

/// <summary>Which execution providers to try, in order, and how to configure the session.</summary>
public sealed record ExecutionProviderOptions
{
    /// <summary>Providers in order of preference, e.g. [cuda, dml, cpu].</summary>
    public IReadOnlyList<ExecutionProvider> Preference { get; init; } = [ExecutionProvider.Cpu];

    /// <summary>Move on to the next provider when one cannot load. Off by default: a missing GPU
    /// library is an error the caller sees, not a silent slowdown.</summary>
    public bool AllowFallback { get; init; }

    public int DeviceId { get; init; }
    /// <summary>Intra-op threads (0: ONNX Runtime's default, one per physical core).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>Run every session on one process-wide thread pool instead of a pool per session: a
    /// service that opens and closes sessions keeps the same threads. Off by default: ONNX Runtime's
    /// environment is one per process, so this works only when our runtime creates it first (not
    /// after onnxruntime-genai or other ONNX Runtime users in the same process). The pool is created
    /// with the first session's IntraOpThreads.</summary>
    public bool ShareThreadPool { get; init; }
    public GraphOptimizationLevel OptimizationLevel { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;
    /// <summary>ONNX Runtime's memory pattern (one block per run, planned per input shapes); null: its default (on).</summary>
    public bool? EnableMemoryPattern { get; init; }
    /// <summary>ONNX Runtime's CPU memory arena; null: its default (on).</summary>
    public bool? EnableCpuMemArena { get; init; }
    /// <summary>When set, ONNX Runtime records every node's time into a Chrome-trace JSON file whose
    /// name starts with this prefix (written when the session ends).</summary>
    public string? ProfileFilePrefix { get; init; }
    /// <summary>ONNX Runtime session config entries, e.g. "session.intra_op.allow_spinning" = "0" or
    /// "session.disable_prepacking" = "1" (the benchmark's kernel candidates set these).</summary>
    public IReadOnlyDictionary<string, string>? SessionConfigEntries { get; init; }

    /// <summary>Load our GroupQueryAttention exports in the runtime's form: the host feeds GQA's lengths and padding bias,
    /// which the file derives from attention_mask in a dozen small nodes a step (<see cref="DirectLengthsGraph"/>; the
    /// file is not changed, and the logits are the same). Off: the graph runs as exported.</summary>
    public bool DirectGqaLengths { get; init; } = true;

    /// <summary>On the CPU provider, load our kernels, libonnxdecoder_kernels.so (<see cref="Runtime.NativeKernels"/>), and put
    /// our fused ops in place of the qkv Split and rotary and the gate/up Split and SiLU (<see cref="NativeFusionGraph"/>; the
    /// file is not changed). Without the library the graph runs as exported, not an error; <see cref="DecoderModel.NativeKernels"/>
    /// says what ran. Off: everything as exported, on ONNX Runtime's kernels.</summary>
    public bool NativeKernels { get; init; } = true;

    /// <summary>With <see cref="NativeKernels"/>, also run qualifying MatMulNBits nodes (accuracy level 4, block 32, symmetric
    /// int4/int8) on our matmul kernel (<see cref="NativeMatMulGraph"/>) instead of ONNX Runtime's. Off by default: side by side
    /// on llama-110m decode it is at parity with ONNX Runtime's int4 kernel (both bound by memory traffic) and slower at int8,
    /// so it is kept for the benchmark's comparison (`kernels --only int4-b32-a4,int4-b32-a4-native`), not as a speed-up.</summary>
    public bool NativeMatMul { get; init; }

    public static ExecutionProvider Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "cpu" => ExecutionProvider.Cpu,
        "cuda" => ExecutionProvider.Cuda,
        "dml" or "directml" => ExecutionProvider.DirectML,
        _ => throw new ArgumentException($"unknown execution provider '{name}': use cpu, cuda or dml"),
    };
}

/// <summary>A provider could not be loaded; the message names it and the cause.</summary>
public sealed class ExecutionProviderException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Builds SessionOptions from an ordered provider preference.</summary>
public static class ExecutionProviders
{
    /// <summary>Creates session options with the first provider that loads. Throws
    /// <see cref="ExecutionProviderException"/> when a provider fails and fallback is off.</summary>
    public static SessionOptions Create(ExecutionProviderOptions options, out ExecutionProvider chosen)
    {
        if (options.Preference.Count == 0) throw new ArgumentException("the execution provider list is empty");
        bool sharedPool = options.ShareThreadPool && EnsureSharedThreadPool(options.IntraOpThreads);
        var failures = new List<string>();
        foreach (var provider in options.Preference)
        {
            var session = new SessionOptions
            {
                GraphOptimizationLevel = options.OptimizationLevel,
                LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
            };
            if (options.ProfileFilePrefix is { Length: > 0 } prefix)
            {
                // The prefix first: setting EnableProfiling hands ONNX Runtime the prefix it holds at that moment.
                session.ProfileOutputPathPrefix = prefix;
                session.EnableProfiling = true;
            }
            if (options.EnableMemoryPattern is bool pattern) session.EnableMemoryPattern = pattern;
            if (options.EnableCpuMemArena is bool arena) session.EnableCpuMemArena = arena;
            foreach (var (key, value) in options.SessionConfigEntries ?? new Dictionary<string, string>()) session.AddSessionConfigEntry(key, value);
            if (sharedPool) session.DisablePerSessionThreads();
            else if (options.IntraOpThreads > 0) session.IntraOpNumThreads = options.IntraOpThreads;
            try
            {
                switch (provider)
                {
                    case ExecutionProvider.Cuda:
                        session.AppendExecutionProvider_CUDA(options.DeviceId);
                        break;
                    case ExecutionProvider.DirectML:
                        // DirectML needs memory patterns off and sequential execution.
                        session.EnableMemoryPattern = false;
                        session.ExecutionMode = ExecutionMode.ORT_SEQUENTIAL;
                        session.AppendExecutionProvider_DML(options.DeviceId);
                        break;
                }
                chosen = provider;
                return session;
            }
            catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException or NotSupportedException)
            {
                session.Dispose();
                string reason = $"{Name(provider)} execution provider could not be loaded: {e.Message.Trim()}";
                if (!options.AllowFallback)
                    throw new ExecutionProviderException($"{reason}. {Advice(provider)}", e);
                failures.Add(reason);
            }
        }
        throw new ExecutionProviderException("no execution provider could be loaded: " + string.Join("; ", failures));
    }

    private static readonly object EnvironmentGate = new();
    private static bool? _sharedPoolAvailable;

    /// <summary>Creates ONNX Runtime's environment with global thread pools, once. False when the
    /// environment already existed without them (created by other code in the process).</summary>
    private static bool EnsureSharedThreadPool(int intraOpThreads)
    {
        lock (EnvironmentGate)
        {
            if (_sharedPoolAvailable is { } known) return known;
            if (OrtEnv.IsCreated) return (_sharedPoolAvailable = false).Value;
            var threading = new OrtThreadingOptions { GlobalIntraOpNumThreads = Math.Max(0, intraOpThreads), GlobalInterOpNumThreads = 1 };
            var creation = new EnvironmentCreationOptions { threadOptions = threading };
            OrtEnv.CreateInstanceWithOptions(ref creation);
            return (_sharedPoolAvailable = true).Value;
        }
    }

    public static string Name(ExecutionProvider provider) => provider switch
    {
        ExecutionProvider.Cpu => "cpu",
        ExecutionProvider.Cuda => "cuda",
        _ => "dml",
    };

    private static string Advice(ExecutionProvider provider) => provider switch
    {
        ExecutionProvider.Cuda => "It needs the Gpu build (-p:OrtFlavor=Gpu), an NVIDIA driver and CUDA 13 libraries (libcublasLt.so.13, libcudart.so.13); use --ep cpu, or allow fallback",
        ExecutionProvider.DirectML => "It needs Windows and the DirectML build (-p:OrtFlavor=DirectML); use --ep cpu, or allow fallback",
        _ => "",
    };
}
