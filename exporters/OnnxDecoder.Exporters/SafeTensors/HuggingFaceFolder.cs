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
/// A multimodal checkpoint (<see cref="MultimodalCheckpoints"/>) exports its text decoder: the decoder's tensors are
/// renamed from the wrapper's prefixes to the text model's, the vision tower's and projector's are skipped unread.
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
        var read = HuggingFaceConfig.ReadCheckpoint(configJson, configPath);
        var config = read.Decoder;
        var wrapper = read.Wrapper;
        int notExported = 0;

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
                    string textName = stored;
                    if (wrapper is not null)
                    {
                        // The vision tower and projector are skipped by name: their data is never read.
                        if (MultimodalCheckpoints.IsNotExported(stored)) { notExported++; continue; }
                        textName = MultimodalCheckpoints.TextName(stored) ?? throw new ModelFormatException(file.Path,
                            $"tensor '{stored}' is under none of a {wrapper.ModelType} checkpoint's prefixes: the text decoder's "
                            + $"({string.Join(", ", MultimodalCheckpoints.TextPrefixes.Select(p => p.Stored))}) or the vision tower's and projector's "
                            + $"({string.Join(", ", MultimodalCheckpoints.NotExportedPrefixes)})");
                    }
                    if (family.IsBuffer(textName)) continue;
                    string name = family.CheckpointName(textName);
                    if (config.TieWordEmbeddings && name == "lm_head.weight") continue; // tied: the head is the embedding
                    if (folder._tensors.TryGetValue(name, out var first))
                        throw new ModelFormatException(file.Path, wrapper is null || first.StoredName == stored
                            ? $"tensor '{stored}' also appears in another shard"
                            : $"tensors '{first.StoredName}' and '{stored}' are both the text decoder's '{name}': a checkpoint stores it under one prefix (re-save it)");
                    folder._tensors.Add(name, (file, stored));
                }
            }
            index?.CheckAllFound();
            if (wrapper is not null)
                foreach (var spec in family.ExpectedWeights(config))
                    if (!folder._tensors.ContainsKey(spec.Name))
                        throw new ModelFormatException(directory, $"text decoder tensor '{spec.Name}' (shape {spec.ShapeText}) is missing: "
                            + $"neither '{string.Join("' nor '", MultimodalCheckpoints.StoredCandidates(spec.Name))}' is stored");
            if (Mxfp4Experts.Declared(configJson, configPath)) folder._dequantized = Mxfp4Experts.Pair(folder._tensors);
            var dtypes = folder._tensors.ToDictionary(t => t.Key, t => t.Value.File.Entries[t.Value.StoredName].DType);
            foreach (var name in folder._dequantized.Keys) dtypes[name] = "MXFP4";
            var stray = folder._tensors.Where(t => dtypes[t.Key] == "U8").OrderBy(t => t.Key, StringComparer.Ordinal).FirstOrDefault();
            if (stray.Key is not null)
                throw new ModelFormatException(stray.Value.File.Path, $"tensor '{stray.Value.StoredName}' has dtype U8, which only MXFP4 checkpoints' *_blocks / *_scales "
                    + "pairs may have (config.json quantization_config.quant_method \"mxfp4\")");
            string? textDecoderOf = wrapper is null ? null : $"{wrapper.Description} ({notExported} tensor{(notExported == 1 ? "" : "s")} skipped)"
                + (read.UnreadFields.Count > 0 ? $"; top-level fields not read: {string.Join(", ", read.UnreadFields)}" : "");
            return Checkpoint.Create("safetensors", config, folder, files, Tokenizers.CheckpointTokenizerFiles.Prepare(directory), folder, dtypes, textDecoderOf);
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
