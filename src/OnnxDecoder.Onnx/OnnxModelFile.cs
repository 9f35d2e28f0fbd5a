using System.Globalization;
using Google.Protobuf;
using Microsoft.Win32.SafeHandles;
using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Onnx;

/// <summary>Limits applied when reading an ONNX file from elsewhere.</summary>
public sealed record OnnxReadOptions
{
    /// <summary>Largest .onnx file accepted (protobuf cannot hold more than 2 GiB).</summary>
    public long MaxModelBytes { get; init; } = ModelWriter.MaxProtobufBytes;

    /// <summary>Run <see cref="ModelChecker"/> on the graph after parsing.</summary>
    public bool CheckGraph { get; init; } = true;
}

/// <summary>Where one tensor's bytes lie in an external data file, after validation.</summary>
public sealed record ExternalTensorLocation(string TensorName, string FilePath, long Offset, long Length);

/// <summary>
/// An ONNX model read from a file we did not write. Every external-data reference is validated
/// before any byte is read (rules from FACTS.md, after onnx CVE-2022-25882, CVE-2024-27318 and
/// CVE-2025-51480): no absolute locations, no escape from the model's folder after
/// canonicalisation, no symbolic links on the way, no file with more than one hard link, only the
/// keys location/offset/length/checksum/basepath, non-negative decimal numbers, the range inside
/// the file, and the length equal to the tensor's size. Owns the data files it opens.
/// </summary>
public sealed class OnnxModelFile : IDisposable
{
    private static readonly HashSet<string> AllowedExternalKeys = new(StringComparer.Ordinal) { "location", "offset", "length", "checksum", "basepath" };
    private readonly Dictionary<string, SafeFileHandle> _openFiles = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ExternalTensorLocation> _external = new(StringComparer.Ordinal);

    private OnnxModelFile(string path, ModelProto model)
    {
        FilePath = path;
        Directory = System.IO.Path.GetDirectoryName(path)!;
        Model = model;
    }

    public string FilePath { get; }
    public string Directory { get; }
    public ModelProto Model { get; }
    public IReadOnlyCollection<ExternalTensorLocation> ExternalTensors => _external.Values;

    /// <summary>Reads and validates <paramref name="path"/>. Throws <see cref="ModelFormatException"/>
    /// naming the file and the problem.</summary>
    public static OnnxModelFile Load(string path, OnnxReadOptions? options = null)
    {
        options ??= new OnnxReadOptions();
        string fullPath = System.IO.Path.GetFullPath(path);
        if (!File.Exists(fullPath)) throw new ModelFormatException(fullPath, "file not found");
        long size = new FileInfo(fullPath).Length;
        if (size > options.MaxModelBytes)
            throw new ModelFormatException(fullPath, $"file is {size} bytes, over the {options.MaxModelBytes}-byte limit for an ONNX protobuf (large weights belong in external data)");

        ModelProto model;
        try
        {
            using var stream = File.OpenRead(fullPath);
            using var coded = new CodedInputStream(stream);
            model = ModelProto.Parser.ParseFrom(coded);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ModelFormatException(fullPath, $"not a valid ONNX protobuf ({e.Message})", e);
        }
        if (model.Graph is null) throw new ModelFormatException(fullPath, "the model has no graph (is this an ONNX file?)");

        var file = new OnnxModelFile(fullPath, model);
        try
        {
            foreach (var tensor in AllTensors(model.Graph)) file.ValidateTensor(tensor);
            if (options.CheckGraph)
            {
                var errors = ModelChecker.Check(model);
                if (errors.Count > 0) throw new ModelFormatException(fullPath, "invalid graph: " + string.Join("; ", errors.Take(10)));
            }
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>The bytes of a tensor of this model, inline or external.</summary>
    public byte[] ReadTensorBytes(TensorProto tensor)
    {
        if (tensor.DataLocation != TensorProto.Types.DataLocation.External) return tensor.RawData.ToByteArray();
        var location = _external[tensor.Name];
        if (location.Length > Array.MaxLength) throw new ModelFormatException(location.FilePath, $"tensor '{tensor.Name}' is too large to read into one array");
        var bytes = new byte[location.Length];
        var handle = OpenData(location.FilePath);
        int read = 0;
        while (read < bytes.Length)
        {
            int n = RandomAccess.Read(handle, bytes.AsSpan(read), location.Offset + read);
            if (n == 0) throw new ModelFormatException(location.FilePath, $"file ended while reading tensor '{tensor.Name}'");
            read += n;
        }
        return bytes;
    }

    public void Dispose()
    {
        foreach (var handle in _openFiles.Values) handle.Dispose();
        _openFiles.Clear();
    }

    private static IEnumerable<TensorProto> AllTensors(GraphProto graph)
    {
        foreach (var t in graph.Initializer) yield return t;
        foreach (var node in graph.Node)
            foreach (var attribute in node.Attribute)
            {
                if (attribute.T is not null) yield return attribute.T;
                foreach (var t in attribute.Tensors) yield return t;
                if (attribute.G is not null) foreach (var t in AllTensors(attribute.G)) yield return t;
                foreach (var g in attribute.Graphs) foreach (var t in AllTensors(g)) yield return t;
            }
    }

    private void ValidateTensor(TensorProto tensor)
    {
        string what = $"tensor '{tensor.Name}'";
        var elementType = ElementTypes.FromOnnx(tensor.DataType);
        long? expectedBytes = null;
        if (elementType is { } type)
        {
            try
            {
                expectedBytes = type.ByteLength(ElementTypes.ElementCount(tensor.Dims));
            }
            catch (Exception e) when (e is OverflowException or ArgumentException)
            {
                throw new ModelFormatException(FilePath, $"{what}: dimensions [{string.Join(", ", tensor.Dims)}] are negative or overflow");
            }
        }

        if (tensor.DataLocation != TensorProto.Types.DataLocation.External)
        {
            if (tensor.ExternalData.Count > 0) throw new ModelFormatException(FilePath, $"{what}: has external_data entries but data_location is not EXTERNAL");
            if (expectedBytes is { } n && !tensor.RawData.IsEmpty && tensor.RawData.Length != n)
                throw new ModelFormatException(FilePath, $"{what}: raw_data holds {tensor.RawData.Length} bytes, its shape needs {n}");
            return;
        }

        if (!tensor.RawData.IsEmpty) throw new ModelFormatException(FilePath, $"{what}: is EXTERNAL but also carries raw_data");
        if (_external.ContainsKey(tensor.Name)) throw new ModelFormatException(FilePath, $"{what}: external tensor name is used twice");
        var entries = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in tensor.ExternalData)
        {
            if (!AllowedExternalKeys.Contains(entry.Key))
                throw new ModelFormatException(FilePath, $"{what}: external_data key '{entry.Key}' is not allowed (only location, offset, length, checksum, basepath)");
            if (!entries.TryAdd(entry.Key, entry.Value))
                throw new ModelFormatException(FilePath, $"{what}: external_data key '{entry.Key}' is given twice");
        }
        if (!entries.TryGetValue("location", out var location) || location.Length == 0)
            throw new ModelFormatException(FilePath, $"{what}: external_data has no location");

        string dataPath = ResolveLocation(what, location);
        long offset = ParseNonNegative(what, entries, "offset") ?? 0;
        long fileLength = new FileInfo(dataPath).Length;
        long length = ParseNonNegative(what, entries, "length") ?? fileLength - offset;
        if (offset > fileLength || length > fileLength - offset)
            throw new ModelFormatException(FilePath, $"{what}: range offset {offset} + length {length} runs past the end of '{location}' ({fileLength} bytes)");
        if (expectedBytes is { } expected && length != expected)
            throw new ModelFormatException(FilePath, $"{what}: external length {length} does not match its shape [{string.Join(", ", tensor.Dims)}] ({expected} bytes)");
        _external[tensor.Name] = new ExternalTensorLocation(tensor.Name, dataPath, offset, length);
    }

    private string ResolveLocation(string what, string location)
    {
        if (location.Contains('\0')) throw new ModelFormatException(FilePath, $"{what}: external location contains a NUL byte");
        if (System.IO.Path.IsPathRooted(location) || location.StartsWith('/') || location.StartsWith('\\') || (location.Length > 1 && location[1] == ':'))
            throw new ModelFormatException(FilePath, $"{what}: external location '{location}' is absolute; it must be relative to the model's folder");

        string root = System.IO.Path.TrimEndingDirectorySeparator(Directory);
        string resolved = System.IO.Path.GetFullPath(System.IO.Path.Combine(root, location.Replace('\\', '/')));
        if (!resolved.StartsWith(root + System.IO.Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new ModelFormatException(FilePath, $"{what}: external location '{location}' escapes the model's folder");

        // No symbolic link anywhere between the model's folder and the file.
        string current = root;
        foreach (var part in System.IO.Path.GetRelativePath(root, resolved).Split(System.IO.Path.DirectorySeparatorChar))
        {
            current = System.IO.Path.Combine(current, part);
            var info = new FileInfo(current);
            if (info.LinkTarget is not null || (info.Exists && info.Attributes.HasFlag(FileAttributes.ReparsePoint)) ||
                (System.IO.Directory.Exists(current) && new DirectoryInfo(current).LinkTarget is not null))
                throw new ModelFormatException(FilePath, $"{what}: external location '{location}' goes through a symbolic link ('{part}')");
        }
        if (!File.Exists(resolved)) throw new ModelFormatException(FilePath, $"{what}: external data file '{location}' not found");
        if (FileLinks.HardLinkCount(resolved) is > 1)
            throw new ModelFormatException(FilePath, $"{what}: external data file '{location}' has more than one hard link");
        return resolved;
    }

    private long? ParseNonNegative(string what, Dictionary<string, string> entries, string key)
    {
        if (!entries.TryGetValue(key, out var text)) return null;
        if (text.Length == 0 || text.Length > 19 || !text.All(char.IsAsciiDigit) ||
            !long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value))
            throw new ModelFormatException(FilePath, $"{what}: external_data {key} '{text}' is not a non-negative integer");
        return value;
    }

    private SafeFileHandle OpenData(string path)
    {
        if (!_openFiles.TryGetValue(path, out var handle))
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            _openFiles[path] = handle;
        }
        return handle;
    }
}
