using Microsoft.ML.OnnxRuntime;

namespace OnnxDecoder.Runtime;

/// <summary>
/// Counts the OrtValues the runtime creates and disposes, so a leak check can show that every one
/// it made was released (<see cref="Live"/> returns to its earlier value once sessions are disposed).
/// </summary>
public static class OrtValueLedger
{
    private static long _created, _disposed;

    public static long Created => Interlocked.Read(ref _created);
    public static long Disposed => Interlocked.Read(ref _disposed);
    public static long Live => Created - Disposed;

    /// <summary>Records a value the runtime now owns.</summary>
    internal static OrtValue Track(OrtValue value)
    {
        Interlocked.Increment(ref _created);
        return value;
    }

    /// <summary>Records values that ONNX Runtime created for us (outputs bound to a device).</summary>
    internal static void TrackCreated(int count) => Interlocked.Add(ref _created, count);

    internal static void TrackDisposed(int count) => Interlocked.Add(ref _disposed, count);

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
