using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>
/// A Hugging Face model folder: config.json plus model.safetensors, or shards listed in
/// model.safetensors.index.json (<see cref="SafeTensorsIndex"/> checks the index against the shards). The
/// family names stored tensors (<see cref="DecoderFamily.CheckpointName"/>) and says which are
/// buffers rather than weights (<see cref="DecoderFamily.IsBuffer"/>), which are skipped. When config.json
/// declares MXFP4 quantization, expert blocks and scales read as the float tensors they encode (<see cref="Mxfp4Experts"/>).
/// </summary>
public sealed class HuggingFaceFolder : IWeightSource, IDisposable
{
    private const long MaxJsonBytes = 64L << 20;
    private readonly List<SafeTensorsFile> _files = [];
    private readonly Dictionary<string, (SafeTensorsFile File, string StoredName)> _tensors = new(StringComparer.Ordinal);
    private Dictionary<string, Func<ITensorSource>> _dequantized = new(StringComparer.Ordinal);

    private IReadOnlyCollection<string>? _names;

    public IReadOnlyCollection<string> Names => _names ??= [.. _tensors.Keys, .. _dequantized.Keys];
    public ITensorSource Get(string name) =>
        _tensors.TryGetValue(name, out var t) ? t.File.Tensor(t.StoredName)
        : _dequantized.TryGetValue(name, out var dequantize) ? dequantize()
        : throw new KeyNotFoundException($"no tensor '{name}'");

    public static Checkpoint Open(string directory)
    {
        string configPath = Path.Combine(directory, "config.json");
        if (!File.Exists(configPath)) throw new ModelFormatException(directory, "not a Hugging Face model folder: config.json is missing");
        string configJson = ReadCapped(configPath);
        var config = DecoderConfig.FromHuggingFace(configJson, configPath);

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
            if (Mxfp4Experts.Declared(configJson, configPath)) folder._dequantized = Mxfp4Experts.Pair(folder._tensors);
            var dtypes = folder._tensors.ToDictionary(t => t.Key, t => t.Value.File.Entries[t.Value.StoredName].DType);
            foreach (var name in folder._dequantized.Keys) dtypes[name] = "MXFP4";
            var stray = folder._tensors.Where(t => dtypes[t.Key] == "U8").OrderBy(t => t.Key, StringComparer.Ordinal).FirstOrDefault();
            if (stray.Key is not null)
                throw new ModelFormatException(stray.Value.File.Path, $"tensor '{stray.Value.StoredName}' has dtype U8, which only MXFP4 checkpoints' *_blocks / *_scales "
                    + "pairs may have (config.json quantization_config.quant_method \"mxfp4\")");
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
