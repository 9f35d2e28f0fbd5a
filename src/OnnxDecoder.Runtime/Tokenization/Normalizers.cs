using System.Text;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json "normalizer": text to text before pre-tokenization. Offsets are not
/// tracked: decoders only need ids.</summary>
public interface ITextNormalizer
{
    string Normalize(string text);
}

/// <summary>NFC, NFD, NFKC, NFKD.</summary>
public sealed class UnicodeNormalizer(NormalizationForm form) : ITextNormalizer
{
    public string Normalize(string text) => text.IsNormalized(form) ? text : text.Normalize(form);
}

/// <summary>Lowercase: Unicode lowercase mapping, culture-invariant.</summary>
public sealed class LowercaseNormalizer : ITextNormalizer
{
    public string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>Strip: removes leading and/or trailing whitespace.</summary>
public sealed class StripNormalizer(bool left, bool right) : ITextNormalizer
{
    public string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

/// <summary>Prepend: adds a prefix to any non-empty text (SentencePiece's dummy "▁").</summary>
public sealed class PrependNormalizer(string prefix) : ITextNormalizer
{
    public string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

/// <summary>Replace: every match of a string or regex pattern becomes <paramref name="content"/>.</summary>
public sealed class ReplaceNormalizer(OnigPattern pattern, string content) : ITextNormalizer
{
    public string Normalize(string text) => pattern.Replace(text, content);
}

public sealed class SequenceNormalizer(IReadOnlyList<ITextNormalizer> normalizers) : ITextNormalizer
{
    public string Normalize(string text)
    {
        foreach (var normalizer in normalizers) text = normalizer.Normalize(text);
        return text;
    }
}
