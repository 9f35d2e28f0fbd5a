using Google.Protobuf;
using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Onnx;

/// <summary>How <see cref="ModelWriter"/> lays a model out on disk.</summary>
public sealed record ModelWriterOptions
{
    /// <summary>Tensors of at least this many bytes go to the external data file.</summary>
    public long ExternalDataThreshold { get; init; } = 1024;

    /// <summary>Offsets in the external data file are multiples of this (a power of two), so the
    /// runtime can memory-map each tensor.</summary>
    public int Alignment { get; init; } = 4096;

    /// <summary>Run <see cref="ModelChecker"/> before writing anything.</summary>
    public bool Check { get; init; } = true;

    /// <summary>Called after each tensor is written with (bytes written so far, total bytes).</summary>
    public Action<long, long>? Progress { get; init; }
}

/// <summary>
/// Saves an <see cref="OnnxModel"/> as <c>model.onnx</c> plus one external data file
/// (<c>model.onnx.data</c>). Tensors are streamed to disk one at a time, so peak memory does not
/// grow with the model. Files are written under temporary names and moved into place only when
/// complete, so a failed save leaves no half-written model behind.
/// </summary>
public static class ModelWriter
{
    /// <summary>Protobuf's hard limit on one message.</summary>
    public const long MaxProtobufBytes = int.MaxValue;

    /// <summary>Writes the model to <paramref name="modelPath"/> and returns the external data path
    /// (or null when every tensor was small enough to stay inline).</summary>
    public static string? Save(OnnxModel model, string modelPath, ModelWriterOptions? options = null)
    {
        options ??= new ModelWriterOptions();
        if (options.Alignment <= 0 || (options.Alignment & (options.Alignment - 1)) != 0)
            throw new ArgumentException($"alignment {options.Alignment} must be a positive power of two", nameof(options));

        string fullModelPath = Path.GetFullPath(modelPath);
        string directory = Path.GetDirectoryName(fullModelPath)!;
        Directory.CreateDirectory(directory);
        string dataFileName = Path.GetFileName(fullModelPath) + ".data";
        string dataPath = Path.Combine(directory, dataFileName);
        string tempModel = fullModelPath + ".tmp";
        string tempData = dataPath + ".tmp";

        if (options.Check)
        {
            // Check the graph structure first, with no tensor bytes read.
            ModelChecker.ThrowIfInvalid(model.BuildProto(_ => null), fullModelPath);
        }

        bool anyExternal = false;
        try
        {
            ModelProto proto;
            using (var data = new FileStream(tempData, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                long inlineBytes = 0, writtenBytes = 0, totalBytes = model.WeightBytes;
                proto = model.BuildProto(source =>
                {
                    if (source.ByteLength < options.ExternalDataThreshold)
                    {
                        inlineBytes += source.ByteLength;
                        if (inlineBytes > MaxProtobufBytes / 2)
                            throw new InvalidOperationException("inline tensors exceed 1 GiB: lower ExternalDataThreshold");
                        var bytes = ByteString.CopyFrom(source.ToArray());
                        options.Progress?.Invoke(writtenBytes += source.ByteLength, totalBytes);
                        return tensor => tensor.RawData = bytes;
                    }

                    anyExternal = true;
                    long padding = (options.Alignment - data.Position % options.Alignment) % options.Alignment;
                    if (padding > 0) data.Write(new byte[padding]);
                    long offset = data.Position;
                    source.WriteTo(data);
                    long written = data.Position - offset;
                    if (written != source.ByteLength)
                        throw new InvalidDataException($"a tensor source wrote {written} bytes where its shape needs {source.ByteLength}");
                    options.Progress?.Invoke(writtenBytes += written, totalBytes);
                    return tensor =>
                    {
                        tensor.DataLocation = TensorProto.Types.DataLocation.External;
                        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataFileName });
                        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = written.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    };
                });
                data.Flush(flushToDisk: false);
            }

            if (proto.CalculateSize() > MaxProtobufBytes) throw new InvalidOperationException("the model proto exceeds 2 GiB even with external data");
            using (var output = new FileStream(tempModel, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                proto.WriteTo(output);
            }

            File.Move(tempModel, fullModelPath, overwrite: true);
            if (anyExternal)
            {
                File.Move(tempData, dataPath, overwrite: true);
                return dataPath;
            }
            File.Delete(tempData);
            if (File.Exists(dataPath)) File.Delete(dataPath); // a stale data file from an earlier save
            return null;
        }
        catch
        {
            TryDelete(tempModel);
            TryDelete(tempData);
            throw;
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
