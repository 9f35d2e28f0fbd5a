using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Our CPU kernels: libonnxdecoder_kernels.so, an ONNX Runtime custom-op library built from Native/onnxdecoder_kernels.c
/// on Linux x64 (NativeKernels.targets) and shipped beside this assembly. Its ops in <see cref="Domain"/> are the fused
/// SplitRotaryQkv and SiluMul, which <see cref="NativeFusionGraph"/> puts in place of the patterns they compute, and
/// MatMulNBits, which <see cref="NativeMatMulGraph"/> puts in place of qualifying com.microsoft MatMulNBits nodes (opt-in),
/// when a model loads on the CPU provider. Where the library is absent (another OS, a build without gcc)
/// <see cref="IsAvailable"/> is false and graphs run as exported.
/// </summary>
public static class NativeKernels
{
    /// <summary>The custom op's domain (opset version <see cref="OpsetVersion"/>).</summary>
    public const string Domain = "ai.onnxdecoder.cpu";
    public const int OpsetVersion = 1;
    public const string LibraryFileName = "libonnxdecoder_kernels.so";

    private sealed record Probe(string? Path, string? Isa, string Reason);

    private static readonly Lazy<Probe> Found = new(Locate, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Whether the library was found beside the runtime assembly and loads.</summary>
    public static bool IsAvailable => Found.Value.Path is not null;

    /// <summary>The library's full path; null when it is not available.</summary>
    public static string? LibraryPath => Found.Value.Path;

    /// <summary>The code path the library's auto dispatch picks on this CPU ("avx512bw", "avx2" or "scalar"); null when
    /// the library is not available.</summary>
    public static string? Isa => Found.Value.Isa;

    /// <summary>Why the library is not available ("" when it is).</summary>
    public static string UnavailableReason => Found.Value.Reason;

    /// <summary>Registers the library's ops on <paramref name="options"/>; ONNX Runtime loads it and keeps it loaded while
    /// sessions made from these options live.</summary>
    public static void Register(SessionOptions options)
    {
        if (LibraryPath is not { } path)
            throw new InvalidOperationException($"our CPU kernels are not available ({UnavailableReason}): leave NativeKernels off");
        options.RegisterCustomOpLibrary(path);
    }

    /// <summary>The folders the library may lie in: beside the runtime assembly (project and tool outputs), and the RID
    /// folder a package consumer built without a RuntimeIdentifier gets.</summary>
    private static IEnumerable<string> Candidates()
    {
        var folders = new List<string>();
        if (Path.GetDirectoryName(typeof(NativeKernels).Assembly.Location) is { Length: > 0 } assemblyFolder) folders.Add(assemblyFolder);
        folders.Add(AppContext.BaseDirectory); // single-file apps have no assembly location
        foreach (var folder in folders.Distinct(StringComparer.Ordinal))
        {
            yield return Path.Combine(folder, LibraryFileName);
            yield return Path.Combine(folder, "runtimes", "linux-x64", "native", LibraryFileName);
        }
    }

    private static Probe Locate()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return new Probe(null, null, $"built for Linux x64 only; this is {RuntimeInformation.OSDescription} {RuntimeInformation.ProcessArchitecture}");
        string? path = Candidates().FirstOrDefault(File.Exists);
        if (path is null)
            return new Probe(null, null, $"{LibraryFileName} is not beside {typeof(NativeKernels).Assembly.GetName().Name}.dll (the build needs gcc on PATH)");
        return ReadIsa(path, out string? isa, out string reason) ? new Probe(path, isa, "") : new Probe(null, null, reason);
    }

    /// <summary>Loads the library to ask which ISA it picks: a library that does not load or lacks the export is not used.</summary>
    private static unsafe bool ReadIsa(string path, out string? isa, out string reason)
    {
        isa = null;
        if (!NativeLibrary.TryLoad(path, out var handle))
        {
            reason = $"{path} does not load (rebuild it: it needs Linux x64 with glibc)";
            return false;
        }
        // The handle stays open: ONNX Runtime loads the same file again for each session, and unloading under it gains nothing.
        if (!NativeLibrary.TryGetExport(handle, "OnnxDecoderKernelsIsa", out var export) || !NativeLibrary.TryGetExport(handle, "RegisterCustomOps", out _))
        {
            reason = $"{path} lacks OnnxDecoderKernelsIsa or RegisterCustomOps (a stale build: rebuild OnnxDecoder.Runtime)";
            return false;
        }
        isa = Marshal.PtrToStringUTF8(((delegate* unmanaged<IntPtr>)export)());
        if (isa is not ("avx512bw" or "avx2" or "scalar"))
        {
            reason = $"{path} reports ISA '{isa}', not avx512bw, avx2 or scalar (a stale build: rebuild OnnxDecoder.Runtime)";
            isa = null;
            return false;
        }
        reason = "";
        return true;
    }
}
