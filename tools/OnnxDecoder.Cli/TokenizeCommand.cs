using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Cli;

/// <summary>
/// `onnx-decoder tokenize`: the folder's tokenizer as Hugging Face would run it, for scripts.
/// <code>
/// tokenize --model DIR (--text TEXT | --texts FILE) [--add-special-tokens] --format json   {"ids":[...]} / [{"ids":[...]}, ...]
/// tokenize --model DIR --decode 1,2,3 [--skip-special-tokens] --format json                  {"text":"..."}
/// tokenize --model DIR --bench CORPUS                                                        {"mb_per_s":X,"tokens":N}
/// </code>
/// JSON output keeps non-ASCII text as UTF-8 (no needless \u escapes).
/// </summary>
public static class TokenizeCommand
{
    private const long MaxTextsBytes = 256L << 20;

    private static readonly JsonWriterOptions Output = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "folder with tokenizer files (a model folder or a Hugging Face folder)", Required = true };
        var text = new Option<string?>("--text") { Description = "text to encode" };
        var texts = new Option<string?>("--texts") { Description = "JSON file holding an array of strings to encode" };
        var addSpecial = new Option<bool>("--add-special-tokens") { Description = "add the tokenizer's special tokens (its post-processor, e.g. BOS)" };
        var decode = new Option<string?>("--decode") { Description = "comma-separated ids to decode" };
        var skipSpecial = new Option<bool>("--skip-special-tokens") { Description = "leave special tokens out of decoded text" };
        var format = new Option<string>("--format") { Description = "output format: json", DefaultValueFactory = _ => "json" };
        var bench = new Option<string?>("--bench") { Description = "a UTF-8 text file: encode it (paragraph chunks, 3 rounds) and print the fastest MB/s" };
        var command = new Command("tokenize", "Encode text to ids or decode ids to text with the folder's tokenizer, as JSON")
        {
            model, text, texts, addSpecial, decode, skipSpecial, format, bench,
        };
        command.SetAction(r => Commands.Guard(() =>
        {
            if (r.GetValue(format) != "json") throw new ArgumentException($"--format {r.GetValue(format)} is not supported: use json");
            string folder = Path.GetFullPath(r.GetValue(model)!);
            if (!Directory.Exists(folder)) throw new ArgumentException($"--model {folder}: folder not found");
            var tokenizer = TextTokenizer.Load(folder, BosOf(folder));
            int modes = new[] { r.GetValue(text) is not null, r.GetValue(texts) is not null, r.GetValue(decode) is not null, r.GetValue(bench) is not null }.Count(b => b);
            if (modes != 1) throw new ArgumentException("give exactly one of --text, --texts, --decode or --bench");
            // Written in full before any of it reaches stdout: a failure prints no partial JSON.
            var buffer = new MemoryStream();
            using var writer = new Utf8JsonWriter(buffer, Output);
            if (r.GetValue(text) is { } one) WriteIds(writer, tokenizer.EncodeText(one, r.GetValue(addSpecial)));
            else if (r.GetValue(texts) is { } file)
            {
                writer.WriteStartArray();
                foreach (var item in ReadTexts(file)) WriteIds(writer, tokenizer.EncodeText(item, r.GetValue(addSpecial)));
                writer.WriteEndArray();
            }
            else if (r.GetValue(decode) is { } list)
            {
                writer.WriteStartObject();
                string decoded = tokenizer.Decode(ParseIds(list), r.GetValue(skipSpecial));
                writer.WritePropertyName("text");
                writer.WriteRawValue(JsonString(decoded), skipInputValidation: true);
                writer.WriteEndObject();
            }
            else Bench(writer, tokenizer, r.GetValue(bench)!);
            writer.Flush();
            using var stdout = Console.OpenStandardOutput();
            buffer.WriteTo(stdout);
            return 0;
        }));
        return command;
    }

    /// <summary>A model folder's BOS (genai_config.json), else none: tokenizer.json knows its own.</summary>
    private static int? BosOf(string folder) =>
        File.Exists(Path.Combine(folder, ModelFolder.ConfigFileName)) ? ModelFolder.Open(folder).BosTokenId : null;

    /// <summary>A JSON string literal that escapes only what JSON requires (quote, backslash,
    /// control characters): System.Text.Json's encoders escape every character above U+FFFF.
    /// Decoded text has no lone surrogates (invalid UTF-8 decodes to U+FFFD).</summary>
    internal static string JsonString(string text)
    {
        var builder = new StringBuilder(text.Length + 2).Append('"');
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            switch (c)
            {
                case '"': builder.Append("\\\""); break;
                case '\\': builder.Append("\\\\"); break;
                case '\n': builder.Append("\\n"); break;
                case '\r': builder.Append("\\r"); break;
                case '\t': builder.Append("\\t"); break;
                case < ' ': builder.Append(System.Globalization.CultureInfo.InvariantCulture, $"\\u{(int)c:x4}"); break;
                default:
                    if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) builder.Append(c).Append(text[++i]);
                    else builder.Append(char.IsSurrogate(c) ? '\uFFFD' : c);
                    break;
            }
        }
        return builder.Append('"').ToString();
    }

    private static void WriteIds(Utf8JsonWriter writer, int[] ids)
    {
        writer.WriteStartObject();
        writer.WriteStartArray("ids");
        foreach (int id in ids) writer.WriteNumberValue(id);
        writer.WriteEndArray();
        writer.WriteEndObject();
    }

    private static List<string> ReadTexts(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"--texts {path}: file not found");
        if (new FileInfo(path).Length > MaxTextsBytes) throw new ModelFormatException(path, $"is over the {MaxTextsBytes}-byte limit for --texts");
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 4 });
            if (document.RootElement.ValueKind != JsonValueKind.Array) throw new ModelFormatException(path, "--texts must hold a JSON array of strings");
            return document.RootElement.EnumerateArray().Select((e, i) => e.ValueKind == JsonValueKind.String ? e.GetString()!
                : throw new ModelFormatException(path, $"--texts element {i} is a {e.ValueKind}, not a string")).ToList();
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"is not valid JSON ({e.Message})", e);
        }
    }

    private static List<int> ParseIds(string list)
    {
        var ids = new List<int>();
        foreach (var part in list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            ids.Add(int.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id)
                ? id : throw new ArgumentException($"--decode: '{part}' is not a token id (give non-negative integers separated by commas)"));
        return ids;
    }

    /// <summary>Encodes the corpus in chunks of paragraphs (split on blank lines, grouped to at least
    /// 16384 UTF-16 units) one per call, as the node reference's --bench does, so the two MB/s
    /// figures compare the same work.</summary>
    private static void Bench(Utf8JsonWriter writer, TextTokenizer tokenizer, string path)
    {
        string corpus = File.ReadAllText(path, Encoding.UTF8);
        var chunks = new List<string>();
        string? current = null;
        foreach (var paragraph in corpus.Split("\n\n"))
        {
            current = current is null ? paragraph : current + "\n\n" + paragraph;
            if (current.Length < 16384) continue;
            chunks.Add(current);
            current = null;
        }
        if (current is not null) chunks.Add(current);
        double best = double.MaxValue;
        long tokens = 0;
        for (int round = 0; round < 3; round++)
        {
            var clock = Stopwatch.StartNew();
            long count = 0;
            foreach (var chunk in chunks) count += tokenizer.EncodeText(chunk, addSpecialTokens: false).Length;
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
            tokens = count;
        }
        writer.WriteStartObject();
        writer.WriteNumber("mb_per_s", Encoding.UTF8.GetByteCount(corpus) / 1e6 / best);
        writer.WriteNumber("tokens", tokens);
        writer.WriteEndObject();
    }
}
