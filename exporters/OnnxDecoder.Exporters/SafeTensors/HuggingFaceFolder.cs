using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>
/// A Hugging Face model folder: config.json plus model.safetensors, or shards listed in
/// model.safetensors.index.json. Shard names must be plain file names inside the folder. GPT-2
/// checkpoints saved without the "transformer." prefix get it; buffers that are not weights
/// (GPT-2's attn.bias masks, rotary inv_freq) are skipped.
/// </summary>
public sealed class HuggingFaceFolder : IWeightSource, IDisposable
{
    private const long MaxJsonBytes = 64L << 20;
    private readonly List<SafeTensorsFile> _files = [];
    private readonly Dictionary<string, (SafeTensorsFile File, string StoredName)> _tensors = new(StringComparer.Ordinal);

    public IReadOnlyCollection<string> Names => _tensors.Keys;
    public ITensorSource Get(string name) => _tensors.TryGetValue(name, out var t) ? t.File.Tensor(t.StoredName) : throw new KeyNotFoundException($"no tensor '{name}'");

    public static Checkpoint Open(string directory)
    {
        string configPath = Path.Combine(directory, "config.json");
        if (!File.Exists(configPath)) throw new ModelFormatException(directory, "not a Hugging Face model folder: config.json is missing");
        var config = DecoderConfig.FromHuggingFace(ReadCapped(configPath), configPath);

        var folder = new HuggingFaceFolder();
        try
        {
            var shardNames = ShardNames(directory);
            var files = new List<string> { configPath };
            foreach (var shard in shardNames)
            {
                string shardPath = Path.Combine(directory, shard);
                if (new FileInfo(shardPath).LinkTarget is not null)
                    throw new ModelFormatException(shardPath, "is a symbolic link: shards must be regular files inside the model folder");
                var file = SafeTensorsFile.Open(shardPath);
                folder._files.Add(file);
                files.Add(file.Path);
                foreach (var stored in file.Entries.Keys)
                {
                    if (IsBuffer(stored)) continue;
                    string name = config.ModelType == "gpt2" && !stored.StartsWith("transformer.", StringComparison.Ordinal) && stored != "lm_head.weight" ? "transformer." + stored : stored;
                    if (config.TieWordEmbeddings && name == "lm_head.weight") continue; // tied: the head is the embedding
                    if (!folder._tensors.TryAdd(name, (file, stored)))
                        throw new ModelFormatException(file.Path, $"tensor '{stored}' also appears in another shard");
                }
            }
            var dtypes = folder._tensors.ToDictionary(t => t.Key, t => t.Value.File.Entries[t.Value.StoredName].DType);
            return Checkpoint.Create("safetensors", config, folder, files, WriteTokenizerFiles(directory), folder, dtypes);
        }
        catch
        {
            folder.Dispose();
            throw;
        }
    }

    private static bool IsBuffer(string name) =>
        name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal) ||
        name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal);

    private static IReadOnlyList<string> ShardNames(string directory)
    {
        string single = Path.Combine(directory, "model.safetensors");
        string index = Path.Combine(directory, "model.safetensors.index.json");
        if (File.Exists(index))
        {
            using var document = ParseJson(index);
            if (!document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(index, "weight_map must be an object of tensor name -> shard file");
            var shards = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                string shard = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : throw new ModelFormatException(index, $"weight_map['{entry.Name}'] must be a file name");
                if (shard.Length == 0 || shard != Path.GetFileName(shard) || shard is "." or ".." || shard.Contains('\\'))
                    throw new ModelFormatException(index, $"shard '{shard}' must be a plain file name inside the model folder");
                if (!File.Exists(Path.Combine(directory, shard))) throw new ModelFormatException(index, $"shard '{shard}' listed for '{entry.Name}' does not exist");
                shards.Add(shard);
            }
            if (shards.Count == 0) throw new ModelFormatException(index, "weight_map lists no shards");
            return [.. shards];
        }
        if (File.Exists(single)) return ["model.safetensors"];
        throw new ModelFormatException(directory, "no model.safetensors or model.safetensors.index.json");
    }

    private static Action<string>? WriteTokenizerFiles(string directory)
    {
        var names = new[] { "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja" }
            .Where(n => File.Exists(Path.Combine(directory, n))).ToList();
        if (names.Count == 0) return null;
        return target =>
        {
            foreach (var name in names) File.Copy(Path.Combine(directory, name), Path.Combine(target, name), overwrite: true);
        };
    }

    private static string ReadCapped(string path)
    {
        long size = new FileInfo(path).Length;
        if (size > MaxJsonBytes) throw new ModelFormatException(path, $"is {size} bytes, over the {MaxJsonBytes}-byte limit");
        return File.ReadAllText(path);
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(ReadCapped(path), new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"is not valid JSON ({e.Message})");
        }
    }

    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
        _files.Clear();
    }
}
