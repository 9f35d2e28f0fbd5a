using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.Tokenizers;

/// <summary>
/// The tokenizer, chat-template and generation files a Hugging Face checkpoint carries, copied into
/// the model folder. They come from elsewhere and end up in a folder people publish, so they are
/// hostile: only the fixed names below are looked for and written (nothing from the checkpoint names
/// a destination); each must be a regular file with one hard link (a symbolic or hard link could
/// copy a file from outside the checkpoint into the export; the hub cache's links to its own blobs are the
/// exception, see <see cref="SafeTensors.HubCacheLinks"/>) and at most <see cref="MaxBytes"/>.
/// Every file is checked when the checkpoint is opened, so a bad one refuses the export before
/// anything is written.
/// </summary>
public static class CheckpointTokenizerFiles
{
    /// <summary>The runtime's limit for tokenizer files (the largest real tokenizer.json files are ~35 MB).</summary>
    public const long MaxBytes = 64L << 20;

    /// <summary>
    /// tokenizer.json / tokenizer_config.json: what transformers and onnxruntime-genai read;
    /// chat_template.jinja: where newer transformers saves the template (instead of tokenizer_config.json);
    /// special_tokens_map.json, added_tokens.json: the older slow-tokenizer layout;
    /// tokenizer.model (SentencePiece), vocab.json + merges.txt (byte-level BPE), tokenizer.tiktoken:
    /// the vocabularies our runtime loads; generation_config.json: the checkpoint's stop tokens and
    /// sampling defaults.
    /// </summary>
    public static readonly IReadOnlyList<string> Names =
    [
        "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json", "added_tokens.json",
        "tokenizer.model", "vocab.json", "merges.txt", "tokenizer.tiktoken", "generation_config.json",
    ];

    /// <summary>Checks the files of <see cref="Names"/> present in <paramref name="checkpointFolder"/> and
    /// returns what copies them into a model folder, or null when there are none.</summary>
    public static Action<string>? Prepare(string checkpointFolder)
    {
        var present = new List<(string Name, string Path)>();
        foreach (var name in Names)
        {
            string listed = Path.Combine(checkpointFolder, name);
            if (Directory.Exists(listed)) throw new ModelFormatException(listed, "is a folder; a tokenizer file is expected here: remove or rename it");
            if (!File.Exists(listed) && new FileInfo(listed).LinkTarget is null) continue;
            string path = SafeTensors.HubCacheLinks.Resolve(listed, "a tokenizer file copied into the export");
            var info = new FileInfo(path);
            if (!info.Exists) continue;
            Check(path, info.Length);
            present.Add((name, path));
        }
        if (present.Count == 0) return null;
        return modelFolder =>
        {
            foreach (var (name, path) in present) Copy(path, Path.Combine(modelFolder, name));
        };
    }

    private static void Check(string path, long length)
    {
        if (FileLinks.IsRegularFile(path) is false)
            throw new ModelFormatException(path, "is not a regular file (a FIFO, socket or device?): replace it with the file itself");
        if (FileLinks.HardLinkCount(path) is > 1)
            throw new ModelFormatException(path,
                "has more than one hard link; tokenizer files are copied into the export only when they have one: replace it with a copy");
        if (length > MaxBytes) throw new ModelFormatException(path, $"is {length} bytes, over the {MaxBytes}-byte limit for tokenizer files");
    }

    /// <summary>Reads at most <see cref="MaxBytes"/> (the file may have grown since it was checked) and
    /// writes a new file: an existing destination is removed first, so a link left there is replaced
    /// rather than written through.</summary>
    private static void Copy(string source, string destination)
    {
        var info = new FileInfo(source);
        if (info.LinkTarget is not null) throw new ModelFormatException(source, "became a symbolic link while the export ran");
        Check(source, info.Length);
        byte[] bytes;
        using (var input = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            var buffer = new MemoryStream();
            var chunk = new byte[1 << 16];
            int read;
            while ((read = input.Read(chunk)) > 0)
            {
                if (buffer.Length + read > MaxBytes) throw new ModelFormatException(source, $"grew past the {MaxBytes}-byte limit for tokenizer files while it was copied");
                buffer.Write(chunk, 0, read);
            }
            bytes = buffer.ToArray();
        }
        if (File.Exists(destination) || new FileInfo(destination).LinkTarget is not null) File.Delete(destination);
        using var output = new FileStream(destination, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        output.Write(bytes);
    }
}
