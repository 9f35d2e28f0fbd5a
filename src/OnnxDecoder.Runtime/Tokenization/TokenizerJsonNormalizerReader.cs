using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json's normalizer, a Sequence of them included.</summary>
internal sealed class TokenizerJsonNormalizerReader(string path) : TokenizerJsonFields(path)
{
    public ITextNormalizer? Normalizer(JsonElement? element, string field, int depth)
    {
        if (element is null) return null;
        CheckDepth(depth, field);
        var e = element.Value;
        string type = TypeOf(e, field);
        return type switch
        {
            "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
            "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
            "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
            "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Strip" => new StripNormalizer(Bool(e, "strip_left", field, true), Bool(e, "strip_right", field, true)),
            "Prepend" => new PrependNormalizer(String(e, "prepend", field) ?? throw Bad($"{field}.prepend must be a string")),
            "Replace" => new ReplaceNormalizer(Pattern(e, field), String(e, "content", field) ?? throw Bad($"{field}.content must be a string")),
            "Sequence" => new SequenceNormalizer(Array(e, "normalizers", field)
                .Select((n, i) => Normalizer(n, $"{field}.normalizers[{i}]", depth + 1) ?? throw Bad($"{field}.normalizers[{i}] is null")).ToList()),
            _ => throw Unsupported(field, type, "NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence"),
        };
    }
}
