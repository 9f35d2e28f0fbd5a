using System.IO.MemoryMappedFiles;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters;

/// <summary>
/// A read-only memory-mapped file. Tensors are read straight from the mapping when the model
/// writer asks for them, so a checkpoint is never loaded whole. Owns the mapping; dispose it
/// after the export.
/// </summary>
public sealed unsafe partial class MappedFile : IDisposable
{
    private const int MadviseDontNeed = 4;

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);

    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _pointer;

    public MappedFile(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
        if (!File.Exists(Path)) throw new ModelFormatException(Path, "file not found");
        Length = new FileInfo(Path).Length;
        if (Length == 0) return;
        _file = MemoryMappedFile.CreateFromFile(Path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        _pointer = pointer + _view.PointerOffset;
    }

    public string Path { get; }
    public long Length { get; }

    /// <summary>Maps <paramref name="path"/> and hands it to <paramref name="parse"/>; when parsing
    /// throws, the mapping is released before the exception leaves. The result owns the mapping.</summary>
    public static T Parse<T>(string path, Func<MappedFile, T> parse)
    {
        var file = new MappedFile(path);
        try
        {
            return parse(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Bytes [offset, offset + length), range-checked against the file.</summary>
    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        CheckRange(offset, length);
        return new ReadOnlySpan<byte>(_pointer + offset, length);
    }

    public void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Length || length > Length - offset)
            throw new ModelFormatException(Path, $"range offset {offset} + length {length} runs past the end of the file ({Length} bytes)");
    }

    /// <summary>Writes bytes [offset, offset + length) to a stream in chunks. On Linux the pages
    /// copied are then released from this process (they stay in the page cache), so streaming a
    /// whole checkpoint does not grow the resident set by the checkpoint's size.</summary>
    public void CopyTo(Stream destination, long offset, long length)
    {
        CheckRange(offset, length);
        const int chunk = 1 << 24;
        for (long done = 0; done < length; done += chunk)
        {
            int size = (int)Math.Min(chunk, length - done);
            destination.Write(new ReadOnlySpan<byte>(_pointer + offset + done, size));
            Release(offset + done, size);
        }
    }

    /// <summary>Drops the whole pages inside [offset, offset + length) from the resident set (Linux; a hint elsewhere ignored).</summary>
    public void Release(long offset, long length)
    {
        if (!OperatingSystem.IsLinux() || _view is null) return;
        long page = Environment.SystemPageSize;
        long mappingStart = (long)(_pointer - _view.PointerOffset);
        long absoluteStart = mappingStart + _view.PointerOffset + offset;
        long start = (absoluteStart + page - 1) / page * page;
        long end = (absoluteStart + length) / page * page;
        if (end > start) _ = Madvise((nint)start, (nuint)(end - start), MadviseDontNeed);
    }

    /// <summary>A lazy tensor over a range of this file.</summary>
    public ITensorSource Tensor(ElementType type, long[] shape, long offset)
    {
        long bytes = type.ByteLength(ElementTypes.ElementCount(shape));
        CheckRange(offset, bytes);
        return TensorData.Lazy(type, shape, stream => CopyTo(stream, offset, bytes));
    }

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _file?.Dispose();
    }
}
