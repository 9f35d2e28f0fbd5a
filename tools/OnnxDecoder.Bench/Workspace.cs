using System.Text.Json.Nodes;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Gguf;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Quantization;

namespace OnnxDecoder.Bench;

/// <summary>
/// The benchmark's files under one work folder: the source checkpoint (a llama2.c .bin, or a synth
/// preset written as a Hugging Face folder), our exports of it and the GGUF files llama.cpp reads.
/// A file is rebuilt when the stamp beside it (what it was made from) differs, so reruns skip exports.
/// </summary>
public sealed class Workspace : IDisposable
{
    public Workspace(string folder, string source, string? tokenizer, int seed)
    {
        Folder = Path.GetFullPath(folder);
        Directory.CreateDirectory(Folder);
        string checkpointPath = source;
        if (SynthPresets.All.ContainsKey(source))
        {
            checkpointPath = Path.Combine(Folder, $"synth-{source}-{seed}");
            Build(checkpointPath, $"synth {source} seed {seed}", () => SynthPresets.Write(source, seed, checkpointPath));
        }
        Checkpoint = Checkpoint.Open(checkpointPath, tokenizer);
        TokenizerPath = Checkpoint.Format.StartsWith("llama2.c", StringComparison.Ordinal) ? Checkpoint.SourceFiles.Skip(1).FirstOrDefault() : null;
        Name = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(checkpointPath));
    }

    public string Folder { get; }
    public string Name { get; }
    public Checkpoint Checkpoint { get; }
    public DecoderConfig Config => Checkpoint.Config;
    private string? TokenizerPath { get; }

    /// <summary>The default int4 / int8 of the CLI's export: the default block size and scale search, symmetric, accuracy level 4.</summary>
    public static QuantizationOptions DefaultQuantization(int bits) => new() { Bits = bits, AccuracyLevel = 4 };

    /// <summary>Our export (ort lowering) with <paramref name="quantization"/> (null: fp32), in a folder named by <paramref name="id"/>.</summary>
    public string Export(string id, QuantizationOptions? quantization, bool float16 = false, Lowering lowering = Lowering.Ort)
    {
        string folder = Path.Combine(Folder, $"onnx-{id}");
        var options = new ExportOptions { Lowering = lowering, Quantization = quantization?.Validate(), Float16 = float16 };
        // The exporter assembly's build id is part of the stamp: a changed quantizer re-exports.
        string exporter = typeof(ModelFolderWriter).Assembly.ManifestModule.ModuleVersionId + "/" + typeof(BlockQuantizer).Assembly.ManifestModule.ModuleVersionId;
        Build(folder, $"{Checkpoint.Description} {lowering} {quantization} fp16={float16} exporter {exporter}", () =>
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            Console.Error.WriteLine($"exporting {id} ...");
            ModelFolderWriter.Write(folder, Checkpoint, options);
        });
        return folder;
    }

    /// <summary>A GGUF file of the same weights with 2-D weights in <paramref name="type"/>.</summary>
    public string Gguf(GgmlType type)
    {
        string path = Path.Combine(Folder, $"{Name}-{type}.gguf");
        Build(path, $"{Checkpoint.Description} {type} writer 1", () =>
        {
            Console.Error.WriteLine($"writing {Path.GetFileName(path)} ...");
            var vocabulary = TokenizerPath is not null
                ? GgufWriter.VocabularyOf(TokenizerPath, Config.VocabSize)
                : GgufWriter.PlaceholderVocabulary(Config);
            GgufWriter.Write(path + ".tmp", Checkpoint, type, vocabulary);
            File.Move(path + ".tmp", path, overwrite: true);
        });
        return path;
    }

    private static void Build(string target, string stamp, Action build)
    {
        string stampPath = target + ".stamp";
        if ((File.Exists(target) || Directory.Exists(target)) && File.Exists(stampPath) && File.ReadAllText(stampPath) == stamp) return;
        File.Delete(stampPath);
        build();
        File.WriteAllText(stampPath, stamp);
    }

    /// <summary>Teacher-forcing tokens from a JSON file with prompt_ids and generated_ids (e.g. llama2.c's greedy text).</summary>
    public static int[] TokensFromJson(string path)
    {
        var root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path}: empty JSON");
        int[] Ids(string key) => root[key]?.AsArray().Select(n => n!.GetValue<int>()).ToArray()
            ?? throw new InvalidDataException($"{path}: '{key}' (an array of token ids) is missing");
        return [.. Ids("prompt_ids"), .. Ids("generated_ids")];
    }

    public void Dispose() => Checkpoint.Dispose();
}
