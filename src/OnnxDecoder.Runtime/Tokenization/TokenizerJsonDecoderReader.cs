using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json's decoder, a Sequence of them included.</summary>
internal sealed class TokenizerJsonDecoderReader(string path) : TokenizerJsonFields(path)
{
    public ITokenDecoder? Decoder(JsonElement? element, string field, int depth)
    {
        if (element is null) return null;
        CheckDepth(depth, field);
        var e = element.Value;
        string type = TypeOf(e, field);
        switch (type)
        {
            case "ByteLevel": return new ByteLevelDecoder();
            case "ByteFallback": return new ByteFallbackDecoder();
            case "Fuse": return new FuseDecoder();
            case "Strip":
                return new StripDecoder(OneChar(String(e, "content", field), $"{field}.content"), Int(e, "start", field, 0, 1 << 16), Int(e, "stop", field, 0, 1 << 16));
            case "Replace":
                return new ReplaceDecoder(Pattern(e, field), String(e, "content", field) ?? throw Bad($"{field}.content must be a string"));
            case "Metaspace":
            {
                char replacement = OneChar(String(e, "replacement", field) ?? "\u2581", $"{field}.replacement");
                string? scheme = String(e, "prepend_scheme", field);
                bool dropFirst = scheme is null ? Bool(e, "add_prefix_space", field, true) : scheme != "never";
                return new MetaspaceDecoder(replacement, dropFirst);
            }
            case "BPEDecoder":
                return new BpeSuffixDecoder(String(e, "suffix", field) ?? "</w>");
            case "Sequence":
                return new SequenceDecoder(Array(e, "decoders", field)
                    .Select((d, i) => Decoder(d, $"{field}.decoders[{i}]", depth + 1) ?? throw Bad($"{field}.decoders[{i}] is null")).ToList());
            default:
                throw Unsupported(field, type, "ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder, Sequence");
        }
    }
}
