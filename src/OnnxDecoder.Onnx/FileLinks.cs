using System.Runtime.InteropServices;

namespace OnnxDecoder.Onnx;

/// <summary>File-system facts that .NET does not expose: the hard-link count of a file and whether
/// it is a regular file (not a FIFO, socket or device, which would block or never end when read).</summary>
public static partial class FileLinks
{
    private const uint FileTypeMask = 0xF000, RegularFile = 0x8000; // S_IFMT, S_IFREG

    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Stat(string path, Span<byte> buffer);

    /// <summary>Number of hard links to <paramref name="path"/>, or null where we cannot tell
    /// (platforms other than Linux x64/arm64).</summary>
    public static long? HardLinkCount(string path)
    {
        // struct stat: x86_64 has st_nlink as 8 bytes at offset 16; the generic layout (arm64) has
        // st_mode (4 bytes) at 16 and st_nlink (4 bytes) at 20.
        Span<byte> buffer = stackalloc byte[256];
        return StatOf(path, buffer) switch
        {
            Architecture.X64 => BitConverter.ToInt64(buffer.Slice(16, 8)),
            Architecture.Arm64 => BitConverter.ToUInt32(buffer.Slice(20, 4)),
            _ => null,
        };
    }

    /// <summary>Whether <paramref name="path"/> (links followed) is a regular file, or null where we
    /// cannot tell. st_mode is 4 bytes at offset 24 on x86_64 and at 16 in the generic layout.</summary>
    public static bool? IsRegularFile(string path)
    {
        Span<byte> buffer = stackalloc byte[256];
        uint? mode = StatOf(path, buffer) switch
        {
            Architecture.X64 => BitConverter.ToUInt32(buffer.Slice(24, 4)),
            Architecture.Arm64 => BitConverter.ToUInt32(buffer.Slice(16, 4)),
            _ => null,
        };
        return mode is null ? null : (mode & FileTypeMask) == RegularFile;
    }

    /// <summary>Fills <paramref name="buffer"/> with struct stat and returns the layout it has, or null.</summary>
    private static Architecture? StatOf(string path, Span<byte> buffer)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var architecture = RuntimeInformation.ProcessArchitecture;
        if (architecture is not (Architecture.X64 or Architecture.Arm64)) return null;
        return Stat(path, buffer) == 0 ? architecture : null;
    }
}
