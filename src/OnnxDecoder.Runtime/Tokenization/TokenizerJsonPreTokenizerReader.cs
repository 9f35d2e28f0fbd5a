using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json's pre_tokenizer, a Sequence of them included.</summary>
internal sealed class TokenizerJsonPreTokenizerReader(string path) : TokenizerJsonFields(path)
{
    public IPreTokenizer? PreTokenizer(JsonElement? element, string field, int depth)
    {
        if (element is null) return null;
        CheckDepth(depth, field);
        var e = element.Value;
        string type = TypeOf(e, field);
        switch (type)
        {
            case "Split":
                return new SplitPreTokenizer(Pattern(e, field), Behavior(e, field, SplitBehavior.Isolated), Bool(e, "invert", field, false));
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Bool(e, "add_prefix_space", field, true), Bool(e, "use_regex", field, true));
            case "Metaspace":
            {
                char replacement = OneChar(String(e, "replacement", field) ?? "\u2581", $"{field}.replacement");
                string? scheme = String(e, "prepend_scheme", field);
                var prepend = scheme switch
                {
                    "always" => MetaspacePreTokenizer.Prepend.Always,
                    "first" => MetaspacePreTokenizer.Prepend.First,
                    "never" => MetaspacePreTokenizer.Prepend.Never,
                    null => Bool(e, "add_prefix_space", field, true) ? MetaspacePreTokenizer.Prepend.Always : MetaspacePreTokenizer.Prepend.Never,
                    _ => throw Bad($"{field}.prepend_scheme '{scheme}' is not one of always, first, never"),
                };
                return new MetaspacePreTokenizer(replacement, prepend, Bool(e, "split", field, true));
            }
            case "Digits":
                return new DigitsPreTokenizer(Bool(e, "individual_digits", field, false));
            case "Punctuation":
                return new PunctuationPreTokenizer(Behavior(e, field, SplitBehavior.Isolated));
            case "Whitespace":
                return new WhitespacePreTokenizer();
            case "WhitespaceSplit":
                return new WhitespaceSplitPreTokenizer();
            case "CharDelimiterSplit":
            {
                string delimiter = String(e, "delimiter", field) ?? throw Bad($"{field}.delimiter must be a string");
                if (Rune.DecodeFromUtf16(delimiter, out var rune, out int length) != System.Buffers.OperationStatus.Done || length != delimiter.Length)
                    throw Bad($"{field}.delimiter must be one character");
                return new CharDelimiterPreTokenizer(rune);
            }
            case "Sequence":
                return new SequencePreTokenizer(Array(e, "pretokenizers", field)
                    .Select((p, i) => PreTokenizer(p, $"{field}.pretokenizers[{i}]", depth + 1) ?? throw Bad($"{field}.pretokenizers[{i}] is null")).ToList());
            default:
                throw Unsupported(field, type, "Split, ByteLevel, Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit, CharDelimiterSplit, Sequence");
        }
    }
}
