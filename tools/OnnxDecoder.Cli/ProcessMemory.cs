using System.Globalization;

namespace OnnxDecoder.Cli;

/// <summary>Memory figures of this process from /proc/self/status (Linux).</summary>
internal static class ProcessMemory
{
    /// <summary>A "Key: N kB" line of /proc/self/status in bytes, or null where there is none.</summary>
    public static long? StatusBytes(string key)
    {
        if (!File.Exists("/proc/self/status")) return null;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        return null;
    }
}
