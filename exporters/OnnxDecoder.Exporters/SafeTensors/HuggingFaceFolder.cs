using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>
/// A Hugging Face model folder: config.json plus model.safetensors, or shards listed in
/// model.safetensors.index.json (<see cref="SafeTensorsIndex"/> checks the index against the shards). The
/// family names stored tensors (<see cref="DecoderFamily.CheckpointName"/>) and says which are
/// buffers rather than weights (<see cref="DecoderFamily.IsBuffer"/>), which are skipped.
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

        var family = FamilyRegistry.For(config);
        var folder = new HuggingFaceFolder();
        try
        {
            var index = SafeTensorsIndex.Find(directory);
            var shardNames = index?.Shards ?? ["model.safetensors"];
            var files = new List<string> { configPath };
            foreach (var shard in shardNames)
            {
                string shardPath = HubCacheLinks.Resolve(Path.Combine(directory, shard), "a shard");
                var file = SafeTensorsFile.Open(shardPath);
                folder._files.Add(file);
                files.Add(file.Path);
                index?.CheckShard(shard, file);
                foreach (var stored in file.Entries.Keys)
                {
                    if (family.IsBuffer(stored)) continue;
                    string name = family.CheckpointName(stored);
                    if (config.TieWordEmbeddings && name == "lm_head.weight") continue; // tied: the head is the embedding
                    if (!folder._tensors.TryAdd(name, (file, stored)))
                        throw new ModelFormatException(file.Path, $"tensor '{stored}' also appears in another shard");
                }
            }
            index?.CheckAllFound();
            var dtypes = folder._tensors.ToDictionary(t => t.Key, t => t.Value.File.Entries[t.Value.StoredName].DType);
            return Checkpoint.Create("safetensors", config, folder, files, Tokenizers.CheckpointTokenizerFiles.Prepare(directory), folder, dtypes);
        }
        catch
        {
            folder.Dispose();
            throw;
        }
    }

    private static string ReadCapped(string path)
    {
        long size = new FileInfo(path).Length;
        if (size > MaxJsonBytes) throw new ModelFormatException(path, $"is {size} bytes, over the {MaxJsonBytes}-byte limit");
        return File.ReadAllText(path);
    }

    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
        _files.Clear();
    }
}
