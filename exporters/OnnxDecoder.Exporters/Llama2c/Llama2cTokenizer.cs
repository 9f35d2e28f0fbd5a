using System.Buffers.Binary;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.Llama2c;

/// <summary>
/// A llama2.c tokenizer.bin: int32 max_token_length, then per id a float32 score, an int32 byte
/// length and the bytes. Hostile input: lengths are capped and checked against the file, and the
/// file must hold exactly the model's vocabulary.
/// </summary>
public sealed record Llama2cTokenizer(int MaxTokenLength, IReadOnlyList<byte[]> Pieces, IReadOnlyList<float> Scores)
{
    private const int MaxPieceBytes = 1 << 12;
    private const long MaxFileBytes = 256L << 20;

    public static Llama2cTokenizer Read(string path, int vocabSize)
    {
        string fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath)) throw new ModelFormatException(fullPath, "file not found");
        long size = new FileInfo(fullPath).Length;
        if (size > MaxFileBytes) throw new ModelFormatException(fullPath, $"is {size} bytes, over the {MaxFileBytes}-byte limit for a tokenizer");
        byte[] bytes = File.ReadAllBytes(fullPath);
        if (bytes.Length < 4) throw new ModelFormatException(fullPath, "is shorter than its 4-byte header");
        int maxLength = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (maxLength <= 0 || maxLength > MaxPieceBytes) throw new ModelFormatException(fullPath, $"max_token_length ({maxLength}) must be between 1 and {MaxPieceBytes}");

        var pieces = new List<byte[]>(vocabSize);
        var scores = new List<float>(vocabSize);
        int offset = 4;
        for (int id = 0; id < vocabSize; id++)
        {
            if (bytes.Length - offset < 8) throw new ModelFormatException(fullPath, $"file ends inside entry {id} of {vocabSize} (truncated, or the vocabulary is smaller than the model's)");
            float score = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(offset));
            int length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(offset + 4));
            offset += 8;
            if (!float.IsFinite(score)) throw new ModelFormatException(fullPath, $"entry {id} has a non-finite score");
            if (length <= 0 || length > maxLength) throw new ModelFormatException(fullPath, $"entry {id} has length {length}, outside 1..max_token_length ({maxLength})");
            if (bytes.Length - offset < length) throw new ModelFormatException(fullPath, $"entry {id} runs past the end of the file");
            pieces.Add(bytes.AsSpan(offset, length).ToArray());
            scores.Add(score);
            offset += length;
        }
        if (offset != bytes.Length)
            throw new ModelFormatException(fullPath, $"has {bytes.Length - offset} bytes after the {vocabSize} entries the model's vocabulary needs");
        return new Llama2cTokenizer(maxLength, pieces, scores);
    }
}
