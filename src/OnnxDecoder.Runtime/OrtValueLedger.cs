using Microsoft.ML.OnnxRuntime;

namespace OnnxDecoder.Runtime;

/// <summary>
/// A probe over the runtime's native objects: every OrtValue the runtime creates and disposes, and
/// what the typed owners of KV memory report (buffers allocated, views made over them, bytes copied
/// between rows). A leak check reads <see cref="Live"/> (it returns to its earlier value once sessions
/// are disposed); a test of the KV path reads the KV counters before and after some steps.
/// Process-wide; per-owner figures are on <see cref="KvCacheStatistics"/>.
/// </summary>
public static class OrtValueLedger
{
    private static long _created, _disposed, _kvBuffers, _kvViews, _kvCopies, _kvBytesCopied;

    public static long Created => Interlocked.Read(ref _created);
    public static long Disposed => Interlocked.Read(ref _disposed);
    public static long Live => Created - Disposed;
    /// <summary>KV buffers allocated through ONNX Runtime's allocator (host or device).</summary>
    public static long KvBuffersAllocated => Interlocked.Read(ref _kvBuffers);
    /// <summary>OrtValue views made over KV buffers (also counted in <see cref="Created"/>).</summary>
    public static long KvViewsCreated => Interlocked.Read(ref _kvViews);
    /// <summary>Contiguous KV segments copied (prompt KV placed into a row, prefixes shared between rows, relayouts).</summary>
    public static long KvCopies => Interlocked.Read(ref _kvCopies);
    public static long KvBytesCopied => Interlocked.Read(ref _kvBytesCopied);

    /// <summary>Records a value the runtime now owns.</summary>
    internal static OrtValue Track(OrtValue value)
    {
        Interlocked.Increment(ref _created);
        return value;
    }

    /// <summary>Records values that ONNX Runtime created for us (outputs bound to a device).</summary>
    internal static void TrackCreated(int count) => Interlocked.Add(ref _created, count);

    internal static void TrackDisposed(int count) => Interlocked.Add(ref _disposed, count);

    internal static void ReportKvBuffer() => Interlocked.Increment(ref _kvBuffers);
    internal static void ReportKvView() => Interlocked.Increment(ref _kvViews);

    internal static void ReportKvCopy(int segments, long bytes)
    {
        Interlocked.Add(ref _kvCopies, segments);
        Interlocked.Add(ref _kvBytesCopied, bytes);
    }

    /// <summary>Disposes a value the runtime owned (null is fine) and records it.</summary>
    internal static void Release(OrtValue? value)
    {
        if (value is null) return;
        value.Dispose();
        Interlocked.Increment(ref _disposed);
    }

    /// <summary>A tracked value released at the end of a using block.</summary>
    internal readonly struct Scoped(OrtValue value) : IDisposable
    {
        public OrtValue Value { get; } = Track(value);
        public void Dispose() => Release(Value);
    }
}
