using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters;

/// <summary>What was written and how long it took.</summary>
public sealed record ExportReport(string Directory, string ModelPath, string? DataPath, long WeightBytes, int NodeCount, TimeSpan Elapsed);

/// <summary>
/// Writes a model folder that our runtime and onnxruntime-genai both load: model.onnx (+
/// model.onnx.data), genai_config.json, and tokenizer files. Metadata (family, lowering,
/// precision, source checksum) goes into the model's metadata_props.
/// </summary>
public static class ModelFolderWriter
{
    /// <summary>Opens a checkpoint (llama2.c .bin with its tokenizer, GGUF, or Hugging Face folder) and exports it.</summary>
    public static ExportReport Export(string checkpointPath, string? tokenizerPath, string directory, ExportOptions options)
    {
        using var checkpoint = Checkpoint.Open(checkpointPath, tokenizerPath);
        return Write(directory, checkpoint, options);
    }

    /// <summary>Exports an open checkpoint: its config, weights, source files and tokenizer.</summary>
    public static ExportReport Write(string directory, Checkpoint checkpoint, ExportOptions options,
        Action<string>? log = null, Action<long, long>? progress = null, bool allowNonFinite = false)
    {
        if (checkpoint.TextDecoderOf is { } textDecoderOf)
        {
            log?.Invoke(textDecoderOf);
            options = options with { Metadata = new Dictionary<string, string>(options.Metadata) { [GraphContract.Metadata.TextDecoderOf] = textDecoderOf } };
        }
        return Write(directory, checkpoint.Config, checkpoint.Weights, options, checkpoint.Description, checkpoint.SourceFiles, checkpoint.WriteTokenizer,
            log, progress, allowNonFinite);
    }

    public static ExportReport Write(string directory, DecoderConfig config, IWeightSource weights, ExportOptions options,
        string sourceDescription, IReadOnlyList<string> sourceFiles, Action<string>? writeTokenizer, Action<string>? log = null, Action<long, long>? progress = null,
        bool allowNonFinite = false)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        config.Validate(sourceDescription);
        WeightMap.Validate(config, weights, sourceDescription);
        Directory.CreateDirectory(directory);

        log?.Invoke($"building {options.Lowering.ToString().ToLowerInvariant()} graph: {config}");
        var metadata = new Dictionary<string, string>(options.Metadata)
        {
            [GraphContract.Metadata.Source] = sourceDescription,
            [GraphContract.Metadata.SourceSha256] = Checksum(sourceFiles),
        };
        // Errors name the checkpoint: the .bin or .gguf file, or the Hugging Face folder (its first file is config.json).
        string checkpointPath = sourceFiles.Count == 0 ? sourceDescription
            : Path.GetFileName(sourceFiles[0]) == "config.json" ? Path.GetDirectoryName(Path.GetFullPath(sourceFiles[0]))! : Path.GetFullPath(sourceFiles[0]);
        var checkedWeights = allowNonFinite ? weights : new FiniteWeights(weights, checkpointPath);
        var model = FamilyRegistry.For(config).Build(config, checkedWeights, options with { Metadata = metadata });

        if (model.MetadataProps.FirstOrDefault(p => p.Key == GraphContract.Metadata.Quantization).Value is { } quantization) log?.Invoke($"quantization: {quantization}");
        string modelPath = Path.Combine(directory, "model.onnx");
        log?.Invoke($"writing {modelPath} ({model.WeightBytes / (1024.0 * 1024):F1} MiB of weights)");
        string? dataPath = ModelWriter.Save(model, modelPath, new ModelWriterOptions { Progress = progress });
        WriteGenAiConfig(directory, config, options);
        writeTokenizer?.Invoke(directory);
        return new ExportReport(directory, modelPath, dataPath, model.WeightBytes, model.NodeCount, clock.Elapsed);
    }

    /// <summary>sha256 over the source files in order (streamed), hex.</summary>
    public static string Checksum(IReadOnlyList<string> files)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (var file in files)
        {
            using var stream = File.OpenRead(file);
            int read;
            while ((read = stream.Read(buffer)) > 0) hash.AppendData(buffer, 0, read);
        }
        return Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
    }

    public static void WriteGenAiConfig(string directory, DecoderConfig config, ExportOptions options)
    {
        int maxLength = options.MaxLength ?? config.MaxPositions;
        bool shared = options.Lowering == Lowering.Ort;
        var eos = new JsonArray(config.EosTokenIds.Select(id => (JsonNode)id).ToArray());
        var root = new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = config.BosTokenId,
                ["context_length"] = maxLength,
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                    ["filename"] = "model.onnx",
                    ["head_size"] = config.HeadDim,
                    ["hidden_size"] = config.HiddenSize,
                    ["inputs"] = new JsonObject
                    {
                        ["input_ids"] = GraphContract.InputIds, ["attention_mask"] = GraphContract.AttentionMask, ["position_ids"] = GraphContract.PositionIds,
                        ["past_key_names"] = GraphContract.PastKeyPattern, ["past_value_names"] = GraphContract.PastValuePattern,
                    },
                    ["outputs"] = new JsonObject
                    {
                        ["logits"] = GraphContract.Logits, ["present_key_names"] = GraphContract.PresentKeyPattern, ["present_value_names"] = GraphContract.PresentValuePattern,
                    },
                    ["num_attention_heads"] = config.NumHeads,
                    ["num_hidden_layers"] = config.NumLayers,
                    ["num_key_value_heads"] = config.NumKvHeads,
                },
                ["eos_token_id"] = eos,
                ["pad_token_id"] = config.EosTokenIds[0],
                ["type"] = config.ModelType,
                ["vocab_size"] = config.VocabSize,
            },
            ["search"] = new JsonObject
            {
                ["diversity_penalty"] = 0.0, ["do_sample"] = false, ["early_stopping"] = true, ["length_penalty"] = 1.0,
                ["max_length"] = maxLength, ["min_length"] = 0, ["no_repeat_ngram_size"] = 0, ["num_beams"] = 1,
                ["num_return_sequences"] = 1, ["past_present_share_buffer"] = shared, ["repetition_penalty"] = 1.0,
                ["temperature"] = 1.0, ["top_k"] = 1, ["top_p"] = 1.0,
            },
        };
        File.WriteAllText(Path.Combine(directory, "genai_config.json"), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
