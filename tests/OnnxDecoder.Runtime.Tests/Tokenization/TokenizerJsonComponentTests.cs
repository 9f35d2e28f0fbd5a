using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// The components the six real tokenizers do not use (Metaspace, Digits, Punctuation, Whitespace,
/// Split behaviors and invert, Lowercase / NFKC / Strip / regex Replace, lstrip / rstrip /
/// single_word / normalized added tokens, templates with EOS, RobertaProcessing, unk without byte
/// fallback, ignore_merges, possessive and case-insensitive regexes): a real vocabulary with each
/// variant swapped in, run by us and by Hugging Face's Rust tokenizers on the same strings.
/// </summary>
public class TokenizerJsonComponentTests
{
    private string _root = "";

    [OneTimeSetUp] public void Create() => _root = TestPaths.NewTempFolder("tokenizer-variants");
    [OneTimeTearDown] public void Delete() => Directory.Delete(_root, recursive: true);

    private static JsonNode J(string json) => JsonNode.Parse(json)!;

    private const string Meta = "\u2581";

    /// <summary>Variant name -> (base tokenizer, changes to its top-level fields and model fields).</summary>
    public static IEnumerable<TestCaseData> Variants()
    {
        TestCaseData V(string name, string baseName, params (string Path, string Json)[] changes) => new TestCaseData(name, baseName, changes).SetName($"Variant_{name}");
        yield return V("metaspace_always_split", "llama2", ("normalizer", "null"),
            ("pre_tokenizer", $$"""{"type":"Metaspace","replacement":"{{Meta}}","prepend_scheme":"always","split":true}"""),
            ("decoder", $$"""{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Metaspace","replacement":"{{Meta}}","prepend_scheme":"always","split":true}]}"""));
        yield return V("metaspace_first_nosplit", "llama2", ("normalizer", "null"),
            ("pre_tokenizer", $$"""{"type":"Metaspace","replacement":"{{Meta}}","prepend_scheme":"first","split":false}"""),
            ("decoder", $$"""{"type":"Metaspace","replacement":"{{Meta}}","prepend_scheme":"first","split":false}"""));
        yield return V("digits_punctuation_metaspace_never", "llama2", ("normalizer", "null"),
            ("pre_tokenizer", $$"""{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"Punctuation","behavior":"Isolated"},{"type":"Metaspace","replacement":"{{Meta}}","prepend_scheme":"never","split":true}]}"""),
            ("decoder", $$"""{"type":"Sequence","decoders":[{"type":"Metaspace","replacement":"{{Meta}}","prepend_scheme":"never","split":true},{"type":"ByteFallback"},{"type":"Fuse"}]}"""));
        yield return V("digits_contiguous_whitespace_lowercase_nfkc", "llama2",
            ("normalizer", """{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Lowercase"}]}"""),
            ("pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"Whitespace"},{"type":"Digits","individual_digits":false}]}"""),
            ("decoder", """{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Replace","pattern":{"Regex":"\\s*\u2581+"},"content":"_"}]}"""));
        yield return V("whitespacesplit_strip_replace_regex_prepend", "llama2",
            ("normalizer", $$"""{"type":"Sequence","normalizers":[{"type":"Strip","strip_left":true,"strip_right":true},{"type":"Replace","pattern":{"Regex":"\\s+"},"content":" "},{"type":"Prepend","prepend":"{{Meta}}"},{"type":"NFD"}]}"""),
            ("pre_tokenizer", """{"type":"WhitespaceSplit"}"""),
            ("decoder", """{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":"\u2581","start":1,"stop":0}]}"""));
        foreach (var behavior in new[] { "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous" })
            foreach (bool invert in new[] { false, true })
                yield return V($"split_{behavior}_{(invert ? "inverted" : "plain")}", "llama2",
                    ("normalizer", $$"""{"type":"Replace","pattern":{"String":" "},"content":"{{Meta}}"}"""),
                    ("pre_tokenizer", $$"""{"type":"Split","pattern":{"Regex":"{{Meta}}+|[0-9]"},"behavior":"{{behavior}}","invert":{{(invert ? "true" : "false")}}}"""));
        yield return V("added_token_flags", "llama2",
            ("added_tokens", """
                [{"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                 {"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                 {"id":2,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                 {"id":32000,"content":"<mask>","single_word":false,"lstrip":true,"rstrip":true,"normalized":false,"special":true},
                 {"id":32001,"content":"world","single_word":true,"lstrip":false,"rstrip":false,"normalized":true,"special":false},
                 {"id":32002,"content":" Hi","single_word":false,"lstrip":false,"rstrip":false,"normalized":true,"special":false},
                 {"id":32003,"content":"im_","single_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":false},
                 {"id":32004,"content":"<s","single_word":false,"lstrip":true,"rstrip":false,"normalized":false,"special":false}]
                """),
            ("post_processor", """
                {"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"</s>","type_id":0}}],
                 "pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]},"</s>":{"id":"</s>","ids":[2],"tokens":["</s>"]}}}
                """));
        yield return V("unk_without_byte_fallback_no_fuse", "llama2", ("model.byte_fallback", "false"), ("model.fuse_unk", "false"));
        yield return V("unk_without_byte_fallback_fused", "llama2", ("model.byte_fallback", "false"), ("model.fuse_unk", "true"));
        yield return V("ignore_merges", "llama2", ("model.ignore_merges", "true"));
        yield return V("bytelevel_gpt2_regex_prefix_space_roberta", "qwen3", ("normalizer", "null"),
            ("pre_tokenizer", """{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}"""),
            ("post_processor", """{"type":"RobertaProcessing","sep":["<|im_end|>",151645],"cls":["<|im_start|>",151644],"trim_offsets":true,"add_prefix_space":true}"""));
        yield return V("possessive_and_case_insensitive_regex", "qwen3",
            ("pre_tokenizer", """
                {"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'S|'LL|'d)|\\p{L}++|\\p{N}{1,2}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*+[\\r\\n]|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},
                 {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false}]}
                """),
            ("post_processor", """{"type":"Sequence","processors":[{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false},{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|endoftext|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<|endoftext|>":{"id":"<|endoftext|>","ids":[151643],"tokens":["<|endoftext|>"]}}}]}"""));
    }

    [TestCaseSource(nameof(Variants))]
    public void Variant_agrees_with_huggingface_tokenizers(string name, string baseName, (string Path, string Json)[] changes)
    {
        var tokenizer = JsonNode.Parse(File.ReadAllText(Path.Combine(NpmTokenizers.Folder(baseName), "tokenizer.json")))!.AsObject();
        foreach (var (path, json) in changes)
        {
            var target = path.StartsWith("model.", StringComparison.Ordinal) ? tokenizer["model"]!.AsObject() : tokenizer;
            target[path.StartsWith("model.", StringComparison.Ordinal) ? path[6..] : path] = JsonNode.Parse(json);
        }
        string file = Path.Combine(_root, $"{name}.json");
        File.WriteAllText(file, tokenizer.ToJsonString());
        var ours = HuggingFaceTokenizer.Load(file);

        var strings = TokenizerJsonAgreementTests.Strings.Concat(
            ["Hi world, hello world!", "worlds world_ _world", "a <mask> b", "<mask>", "x   <mask>   y", "im_ start im_   end", "a <s b<s  c", " Hi Hi  Hi",
             "It'S He'LL she'D they'Ll", "12 345 6789"]).ToList();
        var encode = new JsonArray();
        foreach (var text in strings)
            foreach (bool add in new[] { false, true })
                encode.Add(new JsonObject { ["text"] = text, ["add_special_tokens"] = add });
        var answer = NpmTokenizers.Ask(new JsonObject { ["tokenizer"] = file, ["encode"] = encode, ["decode_encoded"] = true });
        var ids = answer["encode"]!.AsArray().Select(a => a!.AsArray().Select(n => n!.GetValue<int>()).ToArray()).ToList();
        var decoded = answer["decoded_encodings"]!.AsArray().Select(a => a!.AsArray().Select(n => n!.GetValue<string>()).ToArray()).ToList();

        var failures = new List<string>();
        int k = 0;
        foreach (var text in strings)
            foreach (bool add in new[] { false, true })
            {
                var mine = ours.Encode(text, add);
                if (!mine.SequenceEqual(ids[k])) failures.Add($"encode({add}) {System.Text.Json.JsonSerializer.Serialize(text[..Math.Min(60, text.Length)])}: ours [{string.Join(",", mine.Take(20))}] reference [{string.Join(",", ids[k].Take(20))}]");
                for (int skip = 0; skip < 2; skip++)
                {
                    string text2 = ours.Decode(ids[k], skip == 1);
                    if (text2 != decoded[k][skip]) failures.Add($"decode(skip={skip == 1}) of {System.Text.Json.JsonSerializer.Serialize(text[..Math.Min(60, text.Length)])}: ours {System.Text.Json.JsonSerializer.Serialize(text2[..Math.Min(80, text2.Length)])} reference {System.Text.Json.JsonSerializer.Serialize(decoded[k][skip][..Math.Min(80, decoded[k][skip].Length)])}");
                }
                k++;
            }
        Assert.That(failures, Is.Empty, $"{name}: {failures.Count} disagreements; first:\n{string.Join("\n", failures.Take(6))}");
    }
}
