using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace OnnxDecoder.Runtime.Memory;

/// <summary>Where a <see cref="NativeBuffer"/> lives.</summary>
public enum MemoryPlace { Host, PinnedHost, CudaDevice, DirectMLDevice }

/// <summary>
/// One block of native memory from ONNX Runtime's allocator for a session (the CPU arena, CUDA device
/// or pinned host memory, a DirectML device), with the <see cref="OrtMemoryInfo"/> that tensors over
/// it must name. Zeroed when allocated: padding columns of a KV cache are multiplied by an attention
/// weight of 0, and 0 x NaN from stale memory would poison a row. Released through the allocator that
/// made it, so it must be disposed before the session that owns the allocator.
/// </summary>
public sealed class NativeBuffer : SafeHandle
{
    private readonly OrtMemoryAllocation _allocation;

    internal NativeBuffer(SessionAllocator allocator, long bytes) : base(0, ownsHandle: true)
    {
        if (bytes <= 0 || bytes > uint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "ONNX Runtime's allocator takes 1 byte to 4 GiB per buffer: lower the max length or the batch size");
        _allocation = allocator.Allocator.Allocate((uint)bytes);
        SetHandle(_allocation.DangerousGetHandle());
        Info = allocator.Info;
        Place = allocator.Place;
        Bytes = bytes;
        allocator.Clear(this);
    }

    public OrtMemoryInfo Info { get; }
    public MemoryPlace Place { get; }
    public long Bytes { get; }
    /// <summary>Whether the CPU may read and write it directly (host or pinned host memory).</summary>
    public bool IsHostAccessible => Place is MemoryPlace.Host or MemoryPlace.PinnedHost;
    public override bool IsInvalid => handle == 0;

    /// <summary>The start of the block; valid while this buffer is not disposed.</summary>
    public nint Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return handle;
        }
    }

    /// <summary>A view of part of the block as an ONNX Runtime tensor (the caller owns the view, which
    /// must not outlive this buffer).</summary>
    internal OrtValue View(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType elementType, long[] shape, long offsetBytes, int elementSize)
    {
        long bytes = elementSize;
        foreach (long d in shape) bytes = checked(bytes * d);
        if (offsetBytes < 0 || offsetBytes + bytes > Bytes)
            throw new ArgumentOutOfRangeException(nameof(shape), $"a view of {bytes} bytes at {offsetBytes} does not fit a buffer of {Bytes}");
        return OrtValue.CreateTensorValueWithData(Info, elementType, shape, Pointer + (nint)offsetBytes, bytes);
    }

    protected override bool ReleaseHandle()
    {
        _allocation.Dispose();
        return true;
    }
}
