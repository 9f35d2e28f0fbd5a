using System.Runtime.InteropServices;

namespace OnnxDecoder.Onnx;

/// <summary>File-system facts that .NET does not expose: the hard-link count of a file.</summary>
internal static partial class FileLinks
{
    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Stat(string path, Span<byte> buffer);

    /// <summary>Number of hard links to <paramref name="path"/>, or null where we cannot tell
    /// (platforms other than Linux x64/arm64).</summary>
    public static long? HardLinkCount(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        // struct stat: x86_64 has st_nlink as 8 bytes at offset 16; the generic layout (arm64) has
        // st_mode (4 bytes) at 16 and st_nlink (4 bytes) at 20.
        int? offset = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 16,
            Architecture.Arm64 => 20,
            _ => null,
        };
        if (offset is null) return null;
        Span<byte> buffer = stackalloc byte[256];
        if (Stat(path, buffer) != 0) return null;
        return RuntimeInformation.ProcessArchitecture == Architecture.X64
            ? BitConverter.ToInt64(buffer.Slice(offset.Value, 8))
            : BitConverter.ToUInt32(buffer.Slice(offset.Value, 4));
    }
}
