using System.Text.Json;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Cli;

/// <summary>
/// A model card in models/: what to export and how. The source is a synth preset (weights the
/// project makes itself) or a checkpoint path relative to the card's folder.
/// <code>
/// {"name": "stories260k", "description": "...", "source": {"checkpoint": "../../shared/models/stories260K/stories260K.bin",
///  "tokenizer": "../../shared/models/stories260K/tok512.bin"}, "lowering": "ort", "max_length": 512}
/// {"name": "demo", "source": {"synth": "llama-tiny", "seed": 1}, "lowering": "ort"}
/// </code>
/// </summary>
public sealed record ModelCard(string Name, string Description, string? SynthPreset, int Seed, string? Checkpoint, string? Tokenizer, Lowering Lowering, int? MaxLength)
{
    public static ModelCard Read(string path)
    {
        string full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new ModelFormatException(full, "model card not found");
        if (new FileInfo(full).Length > 1 << 20) throw new ModelFormatException(full, "model card is larger than 1 MiB");
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(full));
            var root = document.RootElement;
            string folder = Path.GetDirectoryName(full)!;
            string Str(JsonElement e, string name, bool required = true) =>
                e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()!
                : required ? throw new ModelFormatException(full, $"'{name}' must be a string") : "";
            if (!root.TryGetProperty("source", out var source) || source.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(full, "'source' must be an object with 'synth' or 'checkpoint'");
            string synth = Str(source, "synth", required: false), checkpoint = Str(source, "checkpoint", required: false), tokenizer = Str(source, "tokenizer", required: false);
            if ((synth.Length == 0) == (checkpoint.Length == 0)) throw new ModelFormatException(full, "'source' needs exactly one of 'synth' and 'checkpoint'");
            int seed = source.TryGetProperty("seed", out var s) && s.TryGetInt32(out int sv) ? sv : 1;
            string lowering = Str(root, "lowering", required: false);
            int? maxLength = root.TryGetProperty("max_length", out var m) && m.TryGetInt32(out int mv) ? mv : null;
            return new ModelCard(
                Str(root, "name"), Str(root, "description", required: false), synth.Length > 0 ? synth : null, seed,
                checkpoint.Length > 0 ? Path.GetFullPath(Path.Combine(folder, checkpoint)) : null,
                tokenizer.Length > 0 ? Path.GetFullPath(Path.Combine(folder, tokenizer)) : null,
                lowering.Length == 0 ? Lowering.Ort : Commands.ParseLowering(lowering), maxLength);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(full, $"is not valid JSON ({e.Message})");
        }
    }
}
