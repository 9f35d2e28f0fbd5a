using OnnxDecoder.Exporters.Llama2c;
using OnnxDecoder.Exporters.Tokenizers;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters;

/// <summary>
/// A checkpoint opened for export: its config, its weights (read lazily), the files it came
/// from, and how to write its tokenizer into a model folder. Owns the mapped files.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    private readonly IDisposable? _owner;

    private Checkpoint(string format, DecoderConfig config, IWeightSource weights, IReadOnlyList<string> files, Action<string>? writeTokenizer, IDisposable? owner)
    {
        Format = format;
        Config = config;
        Weights = weights;
        SourceFiles = files;
        WriteTokenizer = writeTokenizer;
        _owner = owner;
    }

    /// <summary>llama2.c-v0, llama2.c-v1, safetensors, gguf.</summary>
    public string Format { get; }
    public DecoderConfig Config { get; }
    public IWeightSource Weights { get; }
    public IReadOnlyList<string> SourceFiles { get; }
    public Action<string>? WriteTokenizer { get; }

    /// <summary>Each tensor's dtype as stored in the source (F32, F16, BF16, Q8_0, ...).</summary>
    public IReadOnlyDictionary<string, string> StoredDTypes { get; private init; } = new Dictionary<string, string>();

    /// <summary>For a multimodal checkpoint, which part is exported and what is left out ("text decoder of a gemma3
    /// (Gemma3ForConditionalGeneration) checkpoint; vision tower and projector not exported ..."); null otherwise.</summary>
    public string? TextDecoderOf { get; private init; }

    /// <summary>A short description for metadata: format and file names (no folders, so exports are reproducible).</summary>
    public string Description => $"{Format}:{string.Join("+", SourceFiles.Select(Path.GetFileName))}";

    /// <summary>Opens a llama2.c .bin (with its tokenizer.bin), a GGUF file, or a Hugging Face folder.</summary>
    public static Checkpoint Open(string path, string? tokenizerPath = null)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) return SafeTensors.HuggingFaceFolder.Open(full);
        if (!File.Exists(full)) throw new ModelFormatException(full, "checkpoint not found");
        if (IsGguf(full)) return Gguf.GgufCheckpoint.Open(full);
        return OpenLlama2c(full, tokenizerPath);
    }

    private static Checkpoint OpenLlama2c(string path, string? tokenizerPath)
    {
        var checkpoint = Llama2cCheckpoint.Open(path);
        try
        {
            tokenizerPath ??= FindLlama2cTokenizer(path, checkpoint.Config.VocabSize);
            var files = new List<string> { path };
            Action<string>? writeTokenizer = null;
            if (tokenizerPath is not null)
            {
                var vocabulary = Llama2cTokenizer.Read(tokenizerPath, checkpoint.Config.VocabSize);
                files.Add(Path.GetFullPath(tokenizerPath));
                int context = checkpoint.Config.MaxPositions;
                writeTokenizer = directory =>
                {
                    // tokenizer.model for Microsoft.ML.Tokenizers (exact llama2.c encoding), tokenizer.json for onnxruntime-genai.
                    using (var stream = File.Create(Path.Combine(directory, "tokenizer.model"))) SentencePieceModelWriter.Write(vocabulary, stream);
                    TokenizerJsonWriter.WriteSentencePieceBpe(directory, SentencePieceModelWriter.Pieces(vocabulary), unkId: 0, bosId: 1, eosId: 2, context);
                };
            }
            return new Checkpoint($"llama2.c-v{checkpoint.Version}", checkpoint.Config, checkpoint, files, writeTokenizer, checkpoint)
            {
                StoredDTypes = checkpoint.Names.ToDictionary(n => n, _ => "F32"),
            };
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    private static bool IsGguf(string path)
    {
        using var stream = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return stream.Read(magic) == 4 && System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(magic) == Gguf.GgufFile.Magic;
    }

    /// <summary>tokenizer.bin or tok{vocab}.bin beside the checkpoint, as llama2.c names them.</summary>
    private static string? FindLlama2cTokenizer(string checkpointPath, int vocabSize)
    {
        string folder = Path.GetDirectoryName(checkpointPath)!;
        return new[] { $"tok{vocabSize}.bin", "tokenizer.bin" }.Select(n => Path.Combine(folder, n)).FirstOrDefault(File.Exists);
    }

    internal static Checkpoint Create(string format, DecoderConfig config, IWeightSource weights, IReadOnlyList<string> files, Action<string>? writeTokenizer,
        IDisposable? owner, IReadOnlyDictionary<string, string> storedDTypes, string? textDecoderOf = null) =>
        new(format, config, weights, files, writeTokenizer, owner) { StoredDTypes = storedDTypes, TextDecoderOf = textDecoderOf };

    public void Dispose() => _owner?.Dispose();
}
