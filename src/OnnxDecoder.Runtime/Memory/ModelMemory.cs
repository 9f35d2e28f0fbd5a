using Microsoft.ML.OnnxRuntime;

namespace OnnxDecoder.Runtime.Memory;

/// <summary>
/// The allocators a loaded model's caches draw from. <see cref="Kv"/> is the session device's memory
/// (CUDA or DirectML with those providers, else the CPU arena); <see cref="Outputs"/> is where logits
/// land: pinned host memory when the provider offers it (CUDA), else the CPU arena. Ids, positions and
/// masks stay small managed arrays. When a device allocator cannot be had or cannot be written
/// (no data transfer for CopyTensors), the KV falls back to host memory and <see cref="Fallback"/>
/// says why: ONNX Runtime then copies each bound KV tensor to the device, as before device KV existed.
/// </summary>
public sealed class ModelMemory : IDisposable
{
    private ModelMemory(SessionAllocator host, SessionAllocator kv, SessionAllocator? pinned, string? fallback)
    {
        Host = host;
        Kv = kv;
        _pinned = pinned;
        Fallback = fallback;
    }

    private readonly SessionAllocator? _pinned;

    public SessionAllocator Host { get; }
    public SessionAllocator Kv { get; }
    public SessionAllocator Outputs => _pinned ?? Host;
    /// <summary>Why the KV is in host memory although the provider is a device one (null otherwise).</summary>
    public string? Fallback { get; }

    /// <param name="deviceKv">False where the row layout needs host KV (moves that overlap in one buffer).</param>
    internal static ModelMemory Create(InferenceSession session, ExecutionProvider provider, int deviceId, bool deviceKv)
    {
        var host = SessionAllocator.Host(session);
        if (provider == ExecutionProvider.Cpu) return new ModelMemory(host, host, null, null);
        string? reason = deviceKv ? null : "this graph's rows share a timeline over one past/present buffer, whose relayouts move KV within a buffer";
        var kv = deviceKv ? SessionAllocator.Device(session, provider, deviceId, out reason) : null;
        if (kv is not null)
        {
            try
            {
                using var probe = kv.Allocate(64); // zeroing needs CopyTensors to reach the device
            }
            catch (OnnxRuntimeException e)
            {
                reason = $"device memory cannot be written through ONNX Runtime's CopyTensors ({e.Message.Trim()})";
                kv.Dispose();
                kv = null;
            }
        }
        return new ModelMemory(host, kv ?? host, SessionAllocator.PinnedHost(session, provider, deviceId), kv is null ? reason : null);
    }

    public void Dispose()
    {
        if (!ReferenceEquals(Kv, Host)) Kv.Dispose();
        _pinned?.Dispose();
        Host.Dispose();
    }
}
