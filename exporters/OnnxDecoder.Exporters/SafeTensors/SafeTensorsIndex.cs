using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>
/// model.safetensors.index.json, read as hostile input. Its weight_map names, for each tensor, the
/// shard that holds it; a shard must be a plain file name inside the model folder (no folder part,
/// no "..", not absolute; the folder refuses symbolic links when it opens the shard). As the shards
/// are opened, every tensor must sit exactly where weight_map says: listed, in the shard it is listed
/// for and in no other; and once all are open, every listed tensor must have been found. An index
/// that disagrees with its shards would otherwise export whichever copy the reader met first.
/// </summary>
public sealed class SafeTensorsIndex
{
    public const string FileName = "model.safetensors.index.json";
    private const long MaxBytes = 16L << 20;
    private readonly Dictionary<string, string> _weightMap;
    private readonly Dictionary<string, string> _found = new(StringComparer.Ordinal);

    private SafeTensorsIndex(string path, Dictionary<string, string> weightMap)
    {
        Path = path;
        _weightMap = weightMap;
        Shards = [.. new SortedSet<string>(weightMap.Values, StringComparer.Ordinal)];
    }

    public string Path { get; }

    /// <summary>The shard file names weight_map lists, sorted, each once.</summary>
    public IReadOnlyList<string> Shards { get; }

    /// <summary>Tensor name -> shard file name.</summary>
    public IReadOnlyDictionary<string, string> WeightMap => _weightMap;

    /// <summary>The folder's index, or null when it has a single model.safetensors instead.</summary>
    public static SafeTensorsIndex? Find(string directory)
    {
        string index = System.IO.Path.Combine(directory, FileName);
        if (File.Exists(index)) return Read(index);
        if (File.Exists(System.IO.Path.Combine(directory, "model.safetensors"))) return null;
        throw new ModelFormatException(directory, "no model.safetensors or model.safetensors.index.json: not a safetensors checkpoint");
    }

    public static SafeTensorsIndex Read(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        ModelFormatException Bad(string problem) => new(path, problem);
        long size = new FileInfo(path).Length;
        if (size > MaxBytes) throw Bad($"is {size} bytes, over the {MaxBytes}-byte limit for a shard index");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw Bad($"is not valid JSON ({e.Message})");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("weight_map", out var map) ||
                map.ValueKind != JsonValueKind.Object)
                throw Bad("weight_map must be an object of tensor name -> shard file");
            var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String) throw Bad($"weight_map['{entry.Name}'] must be a shard file name");
                string shard = entry.Value.GetString()!;
                if (!IsPlainFileName(shard))
                    throw Bad($"shard '{shard}' (listed for tensor '{entry.Name}') must be a plain file name inside the model folder");
                if (!File.Exists(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(path)!, shard)))
                    throw Bad($"shard '{shard}' listed for tensor '{entry.Name}' does not exist");
                if (!weightMap.TryAdd(entry.Name, shard)) throw Bad($"weight_map lists tensor '{entry.Name}' twice");
            }
            if (weightMap.Count == 0) throw Bad("weight_map lists no shards");
            return new SafeTensorsIndex(path, weightMap);
        }
    }

    private static bool IsPlainFileName(string name) =>
        name.Length > 0 && name is not ("." or "..") && name == System.IO.Path.GetFileName(name) &&
        !name.Contains('\\') && !name.Contains(':') && !name.Any(char.IsControl);

    /// <summary>Checks the tensors of an opened shard against weight_map.</summary>
    public void CheckShard(string shard, SafeTensorsFile file)
    {
        foreach (var tensor in file.Entries.Keys.Order(StringComparer.Ordinal))
        {
            if (_found.TryGetValue(tensor, out var first))
                throw new ModelFormatException(file.Path, $"tensor '{tensor}' is also in shard '{first}': a tensor must be stored once (re-save the checkpoint)");
            _found[tensor] = shard;
            if (!_weightMap.TryGetValue(tensor, out var listed))
                throw new ModelFormatException(Path, $"shard '{shard}' holds tensor '{tensor}', which weight_map does not list: the index and its shards disagree");
            if (listed != shard)
                throw new ModelFormatException(Path,
                    $"weight_map places tensor '{tensor}' in shard '{listed}', but shard '{shard}' holds it: the index and its shards disagree");
        }
    }

    /// <summary>After every shard has been checked: each tensor weight_map lists was found.</summary>
    public void CheckAllFound()
    {
        foreach (var (tensor, shard) in _weightMap)
            if (!_found.ContainsKey(tensor))
                throw new ModelFormatException(Path, $"weight_map places tensor '{tensor}' in shard '{shard}', which does not hold it: the index and its shards disagree");
    }
}
