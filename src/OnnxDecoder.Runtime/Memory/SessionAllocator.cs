using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxDecoder.Runtime.Memory;

/// <summary>
/// ONNX Runtime's allocator for one session and one kind of memory, and how to clear and copy
/// memory of that kind: the CPU directly, a device through ONNX Runtime's CopyTensors (the data
/// transfer of the session's execution provider). Every block it hands out is a <see cref="NativeBuffer"/>.
/// </summary>
public sealed class SessionAllocator : IDisposable
{
    private readonly OrtMemoryInfo? _ownedInfo;

    private SessionAllocator(InferenceSession session, OrtMemoryInfo info, MemoryPlace place, bool ownsInfo)
    {
        Allocator = new OrtAllocator(session, info);
        Info = Allocator.Info; // as ONNX Runtime describes the allocator it chose (on CPU, the session's arena)
        Place = place;
        if (ownsInfo) _ownedInfo = info;
    }

    internal OrtAllocator Allocator { get; }
    public OrtMemoryInfo Info { get; }
    public MemoryPlace Place { get; }
    public bool IsHostAccessible => Place is MemoryPlace.Host or MemoryPlace.PinnedHost;

    /// <summary>The session's CPU allocator (on CPU, ONNX Runtime's arena).</summary>
    public static SessionAllocator Host(InferenceSession session) => new(session, OrtMemoryInfo.DefaultInstance, MemoryPlace.Host, ownsInfo: false);

    /// <summary>The allocator of the session's device for <paramref name="provider"/>, or null (with the
    /// reason) when the session offers none, e.g. a CPU-only ONNX Runtime build.</summary>
    public static SessionAllocator? Device(InferenceSession session, ExecutionProvider provider, int deviceId, out string? reason)
    {
        reason = null;
        if (provider == ExecutionProvider.Cpu) return Host(session);
        var (name, place) = provider == ExecutionProvider.Cuda ? ("Cuda", MemoryPlace.CudaDevice) : ("DML", MemoryPlace.DirectMLDevice);
        return TryCreate(session, name, OrtMemType.Default, deviceId, place, ref reason);
    }

    /// <summary>Pinned host memory the device writes outputs into directly (CUDA), or null.</summary>
    public static SessionAllocator? PinnedHost(InferenceSession session, ExecutionProvider provider, int deviceId)
    {
        string? reason = null;
        return provider == ExecutionProvider.Cuda ? TryCreate(session, "CudaPinned", OrtMemType.CpuOutput, deviceId, MemoryPlace.PinnedHost, ref reason) : null;
    }

    private static SessionAllocator? TryCreate(InferenceSession session, string name, OrtMemType memoryType, int deviceId, MemoryPlace place, ref string? reason)
    {
        var info = new OrtMemoryInfo(name, OrtAllocatorType.DeviceAllocator, deviceId, memoryType);
        try
        {
            return new SessionAllocator(session, info, place, ownsInfo: true);
        }
        catch (OnnxRuntimeException e)
        {
            info.Dispose();
            reason = $"the session has no {name} allocator ({e.Message.Trim()})";
            return null;
        }
    }

    public NativeBuffer Allocate(long bytes) => new(this, bytes);

    /// <summary>Zeroes a block of this allocator's kind.</summary>
    internal unsafe void Clear(NativeBuffer buffer)
    {
        if (IsHostAccessible)
        {
            NativeMemory.Clear((void*)buffer.Pointer, (nuint)buffer.Bytes);
            return;
        }
        // A device block is zeroed from a zeroed host block, in pieces of at most 16 MiB.
        const long piece = 16 << 20;
        var zeros = new byte[Math.Min(piece, buffer.Bytes)];
        using var source = OrtValue.CreateTensorValueFromMemory(zeros, [zeros.Length]);
        for (long offset = 0; offset < buffer.Bytes; offset += piece)
        {
            long length = Math.Min(piece, buffer.Bytes - offset);
            using var part = length == zeros.Length ? null : OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, zeros.AsMemory(0, (int)length), [length]);
            using var target = buffer.View(TensorElementType.UInt8, [length], offset, 1);
            OrtEnv.Instance().CopyTensors([part ?? source], [target], null);
        }
    }

    /// <summary>
    /// Copies byte ranges between blocks of this allocator's kind (ranges of one call must not overlap
    /// each other's targets; a range may overlap its own source, as memmove allows, on host memory only).
    /// </summary>
    internal unsafe void Copy(ReadOnlySpan<CopyRange> ranges)
    {
        if (ranges.IsEmpty) return;
        long bytes = 0;
        if (IsHostAccessible)
        {
            foreach (var r in ranges)
            {
                Buffer.MemoryCopy((void*)(r.From.Pointer + (nint)r.FromOffset), (void*)(r.To.Pointer + (nint)r.ToOffset), r.Bytes, r.Bytes);
                bytes += r.Bytes;
            }
        }
        else
        {
            // Device memory: one CopyTensors call over byte views of every range, on the provider's data transfer.
            var sources = new List<OrtValue>(ranges.Length);
            var targets = new List<OrtValue>(ranges.Length);
            try
            {
                foreach (var r in ranges)
                {
                    sources.Add(r.From.View(TensorElementType.UInt8, [r.Bytes], r.FromOffset, 1));
                    targets.Add(r.To.View(TensorElementType.UInt8, [r.Bytes], r.ToOffset, 1));
                    bytes += r.Bytes;
                }
                OrtEnv.Instance().CopyTensors(sources, targets, null);
            }
            finally
            {
                foreach (var v in sources) v.Dispose();
                foreach (var v in targets) v.Dispose();
            }
        }
        OrtValueLedger.ReportKvCopy(ranges.Length, bytes);
    }

    public void Dispose()
    {
        Allocator.Dispose();
        _ownedInfo?.Dispose();
    }
}

/// <summary>Bytes [FromOffset, +Bytes) of one buffer to [ToOffset, +Bytes) of another (or the same).</summary>
internal readonly record struct CopyRange(NativeBuffer From, long FromOffset, NativeBuffer To, long ToOffset, long Bytes);
